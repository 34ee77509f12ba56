"""Regenerates core/assets/fonts/FieldkitMono.ttf, the font every PNG report and annotated
image uses: DejaVu Sans Mono cut to ASCII, Latin-1, Latin Extended-A and a few symbols
(26 kB instead of 343 kB in every binary), without hinting, renamed "Fieldkit Mono" because
the Bitstream Vera licence forbids modified versions from carrying the Bitstream, Vera or
DejaVu names.

    pip install fonttools==4.56.0
    python scripts/subset-font.py /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf   # Debian fonts-dejavu-core 2.37
"""
import sys

from fontTools import subset
from fontTools.ttLib import TTFont

TEXT = "".join(chr(c) for c in list(range(0x20, 0x7F)) + list(range(0xA0, 0x180))) + "±×→←↑↓−…°µ²³·—–‘’“”•✓✗"
NAMES = {1: "Fieldkit Mono", 3: "Fieldkit Mono (subset of DejaVu Sans Mono)", 4: "Fieldkit Mono", 6: "FieldkitMono", 16: "Fieldkit Mono", 17: "Book"}


def main():
    opts = subset.Options()
    opts.layout_features = []
    opts.hinting = False
    opts.name_IDs = ["*"]
    opts.notdef_outline = True
    opts.drop_tables += ["FFTM"]
    font = TTFont(sys.argv[1])
    s = subset.Subsetter(opts)
    s.populate(text=TEXT)
    s.subset(font)
    for rec in font["name"].names:
        if rec.nameID in NAMES:
            rec.string = NAMES[rec.nameID]
    font.save(sys.argv[2] if len(sys.argv) > 2 else "core/assets/fonts/FieldkitMono.ttf")


if __name__ == "__main__":
    main()
