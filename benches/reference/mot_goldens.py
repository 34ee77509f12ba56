#!/usr/bin/env python3
"""Golden multi-object-tracking metrics from py-motmetrics 1.4.0 and TrackEval 1.3.0.

For every case directory under tests/data/mot (or the directories given), reads gt.txt and
pred.txt (MOTChallenge: `frame,id,x,y,w,h,conf,class,vis` / `frame,id,x,y,w,h,conf,-1,-1,-1`)
and writes expected.json with the figures of both tools and notes where they disagree.

    benches/reference/.venv/bin/python benches/reference/mot_goldens.py [--generate] [CASE_DIR...]

--generate first (re)writes the seeded random cases (random_a, random_b) under tests/data/mot.
Deterministic: fixed seeds, scipy's linear_sum_assignment in both tools, files in sorted order.
tests/data/mot/README.md describes the cases and the tools' conventions.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

# py-motmetrics 1.4.0 calls np.asfarray, which numpy 2 removed.
np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # noqa: E731

import motmetrics as mm  # noqa: E402
import trackeval  # noqa: E402

from mot_score import build_data, read_mot as read_mot_array  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
MOT_DIR = os.path.join(REPO, 'tests', 'data', 'mot')

MM_METRICS = [
    'num_frames', 'num_objects', 'num_predictions', 'num_matches', 'num_misses', 'num_false_positives',
    'num_switches', 'num_fragmentations', 'mota', 'motp', 'idf1', 'idp', 'idr', 'idtp', 'idfp', 'idfn',
    'mostly_tracked', 'partially_tracked', 'mostly_lost', 'num_unique_objects',
    # Not asked for by name but needed to relate the tools: matches + switches (= TrackEval CLR_TP).
    'num_detections',
]
MM_COUNTS = {
    'num_frames', 'num_objects', 'num_predictions', 'num_matches', 'num_misses', 'num_false_positives',
    'num_switches', 'num_fragmentations', 'idtp', 'idfp', 'idfn', 'mostly_tracked', 'partially_tracked',
    'mostly_lost', 'num_unique_objects', 'num_detections',
}

# ---------------------------------------------------------------------------------------------
# Seeded random cases
# ---------------------------------------------------------------------------------------------

RANDOM_CASES = {
    # p_miss: per-frame miss; p_gap: per-frame start of a 2-6 frame gap; p_switch: per-frame id exchange
    # (scaled by the number of objects); fp_rate: about the false-positive boxes per frame (1-5 frame tracks
    # started at fp_rate/3 a frame); jitter: box noise as a fraction of the box size (x4 for 8% of the
    # boxes); size: box width range.
    'random_a': dict(seed=20240611, n_obj=9, n_frames=64, img=(1280, 720), p_miss=0.06, p_gap=0.03,
                     p_switch=0.02, fp_rate=0.4, jitter=0.04, size=(28, 70)),
    'random_b': dict(seed=977, n_obj=11, n_frames=72, img=(960, 540), p_miss=0.1, p_gap=0.04,
                     p_switch=0.03, fp_rate=0.7, jitter=0.07, size=(24, 56)),
}


def _r2(v):
    return float('%.2f' % v)


def _fmt(v):
    s = '%.2f' % v
    s = s.rstrip('0').rstrip('.')
    return '0' if s in ('-0', '') else s


def generate_random_case(name, seed, n_obj, n_frames, img, p_miss, p_gap, p_switch, fp_rate, jitter, size):
    """Objects with constant velocity plus noise; a simulated tracker with misses, gaps (re-acquired
    under the same or a new id), id switches between two tracked objects, box jitter (sometimes
    large enough to fall below IoU 0.5) and short false-positive tracks."""
    rng = np.random.default_rng(seed)
    W, H = img
    gt = []  # (frame, id, x, y, w, h)
    tracks = {}
    for oid in range(1, n_obj + 1):
        life = int(rng.integers(n_frames // 3, n_frames + 1))
        start = int(rng.integers(1, n_frames - life + 2))
        w = float(rng.uniform(size[0], size[1]))
        h = w * float(rng.uniform(1.8, 2.8))
        x = float(rng.uniform(0, W - w))
        y = float(rng.uniform(0, H - h))
        vx, vy = rng.normal(0, 4.0), rng.normal(0, 2.0)
        boxes = {}
        for t in range(start, start + life):
            x += vx + rng.normal(0, 0.8)
            y += vy + rng.normal(0, 0.8)
            w = max(8.0, w + rng.normal(0, 0.4))
            h = max(16.0, h + rng.normal(0, 0.8))
            boxes[t] = (_r2(x), _r2(y), _r2(w), _r2(h))
            gt.append((t, oid) + boxes[t])
        tracks[oid] = boxes

    pred = []
    next_id = [1]

    def new_id():
        i = next_id[0]
        next_id[0] += 1
        return i

    cur = {oid: new_id() for oid in tracks}  # tracker id currently following each object
    gap_left = {oid: 0 for oid in tracks}
    for t in range(1, n_frames + 1):
        alive = [o for o in tracks if t in tracks[o]]
        # id switch: two tracked objects exchange tracker ids from this frame on
        if len(alive) >= 2 and rng.random() < p_switch * len(alive) / 2:
            a, b = rng.choice(alive, size=2, replace=False)
            cur[a], cur[b] = cur[b], cur[a]
        for o in alive:
            if gap_left[o] > 0:
                gap_left[o] -= 1
                if gap_left[o] == 0 and rng.random() < 0.5:
                    cur[o] = new_id()  # re-acquired under a new id
                continue
            if rng.random() < p_gap:
                gap_left[o] = int(rng.integers(2, 7))
                continue
            if rng.random() < p_miss:
                continue
            x, y, w, h = tracks[o][t]
            s = jitter * (4.0 if rng.random() < 0.08 else 1.0)  # occasional bad box
            px = x + rng.normal(0, s * w)
            py = y + rng.normal(0, s * h)
            pw = max(4.0, w * (1 + rng.normal(0, s)))
            ph = max(4.0, h * (1 + rng.normal(0, s)))
            pred.append((t, cur[o], _r2(px), _r2(py), _r2(pw), _r2(ph)))
    # short false-positive tracks
    t = 1
    while t <= n_frames:
        for _ in range(int(rng.poisson(fp_rate / 3.0))):
            fid = new_id()
            length = int(rng.integers(1, 6))
            w = float(rng.uniform(size[0], size[1]))
            h = w * float(rng.uniform(1.5, 3.0))
            x = float(rng.uniform(0, W - w))
            y = float(rng.uniform(0, H - h))
            for k in range(length):
                if t + k > n_frames:
                    break
                pred.append((t + k, fid, _r2(x + 3 * k), _r2(y + k), _r2(w), _r2(h)))
        t += 1

    d = os.path.join(MOT_DIR, name)
    os.makedirs(d, exist_ok=True)
    conf_rng = np.random.default_rng(seed + 1)
    with open(os.path.join(d, 'gt.txt'), 'w') as f:
        for fr, i, x, y, w, h in sorted(gt, key=lambda r: (r[0], r[1])):
            f.write('%d,%d,%s,%s,%s,%s,1,1,1\n' % (fr, i, _fmt(x), _fmt(y), _fmt(w), _fmt(h)))
    with open(os.path.join(d, 'pred.txt'), 'w') as f:
        for fr, i, x, y, w, h in sorted(pred, key=lambda r: (r[0], r[1])):
            conf = '%.3f' % conf_rng.uniform(0.3, 1.0)
            f.write('%d,%d,%s,%s,%s,%s,%s,-1,-1,-1\n' % (fr, i, _fmt(x), _fmt(y), _fmt(w), _fmt(h), conf))
    print('generated %s: %d gt rows, %d pred rows' % (name, len(gt), len(pred)))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def read_mot(path):
    """Rows (frame, id, x, y, w, h) in file order."""
    rows = []
    with open(path, newline='') as f:
        for rec in csv.reader(f):
            if not rec or not rec[0].strip():
                continue
            rows.append((int(float(rec[0])), int(float(rec[1])), float(rec[2]), float(rec[3]),
                         float(rec[4]), float(rec[5])))
    return rows


# ---------------------------------------------------------------------------------------------
# py-motmetrics
# ---------------------------------------------------------------------------------------------

def run_motmetrics(case_dir):
    gt = mm.io.loadtxt(os.path.join(case_dir, 'gt.txt'), fmt='mot15-2D')
    pred = mm.io.loadtxt(os.path.join(case_dir, 'pred.txt'), fmt='mot15-2D')
    acc = mm.utils.compare_to_groundtruth(gt, pred, 'iou', distth=0.5)
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=MM_METRICS, name='seq')
    out = {}
    for k in MM_METRICS:
        v = summary.loc['seq', k]
        out[k] = _plain(v, as_int=k in MM_COUNTS)
    return out


# ---------------------------------------------------------------------------------------------
# TrackEval
# ---------------------------------------------------------------------------------------------

def build_trackeval_data(case_dir):
    """The per-sequence dict TrackEval's metrics take, built as its MOT dataset does, without the
    MOT17-specific preprocessing (no class/distractor filtering, no zero-marked gt removal):
    mot_score.build_data, the benchmark's builder."""
    data = build_data(read_mot_array(os.path.join(case_dir, 'gt.txt'), gt=True),
                      read_mot_array(os.path.join(case_dir, 'pred.txt')))
    data['seq'] = os.path.basename(case_dir)
    return data


def run_trackeval(case_dir):
    data = build_trackeval_data(case_dir)
    hota = trackeval.metrics.HOTA().eval_sequence(data)
    clear = trackeval.metrics.CLEAR({'THRESHOLD': 0.5, 'PRINT_CONFIG': False}).eval_sequence(data)
    ident = trackeval.metrics.Identity({'THRESHOLD': 0.5, 'PRINT_CONFIG': False}).eval_sequence(data)
    out = {}
    for k in ['HOTA', 'DetA', 'AssA', 'LocA', 'DetRe', 'DetPr', 'AssRe', 'AssPr']:
        out[k] = float(np.mean(hota[k]))
    for k in ['HOTA(0)', 'LocA(0)']:
        if k in hota:
            out[k] = float(hota[k])
    out['alphas'] = [float(a) for a in trackeval.metrics.HOTA().array_labels]
    for k in ['HOTA', 'DetA', 'AssA', 'LocA']:
        out[k + '_per_alpha'] = [float(v) for v in hota[k]]
    for k in ['HOTA_TP', 'HOTA_FN', 'HOTA_FP']:
        out[k + '_per_alpha'] = [int(round(float(v))) for v in hota[k]]
    for k in ['MOTA', 'MOTP', 'MODA', 'CLR_Re', 'CLR_Pr']:
        out[k] = _plain(clear[k])
    for k in ['IDSW', 'Frag', 'CLR_TP', 'CLR_FN', 'CLR_FP', 'MT', 'PT', 'ML', 'CLR_Frames']:
        out[k] = _plain(clear[k], as_int=True)
    for k in ['IDF1', 'IDR', 'IDP']:
        out[k] = _plain(ident[k])
    for k in ['IDTP', 'IDFN', 'IDFP']:
        out[k] = _plain(ident[k], as_int=True)
    out['num_gt_ids'] = data['num_gt_ids']
    out['num_tracker_ids'] = data['num_tracker_ids']
    return out, data


def _plain(v, as_int=False):
    if isinstance(v, np.generic):
        v = v.item()
    if as_int:
        f = float(v)
        if f != int(f):
            raise ValueError('expected an integer, got %r' % v)
        return int(f)
    v = float(v)
    return None if math.isnan(v) else v  # JSON has no NaN


# ---------------------------------------------------------------------------------------------
# Notes: where the tools differ
# ---------------------------------------------------------------------------------------------

CASE_NOTES = {
    'perfect': [],
    'id_switch': [],
    'fragmentation': [
        "Object 3 is tracked in exactly 8 of its 10 frames (ratio 0.8): motmetrics counts it mostly "
        "tracked (ratio >= 0.8), TrackEval partially tracked (MT needs ratio > 0.8).",
    ],
    'empty_frames': [
        "Frames 3-4 and 13 have gt but no predictions at all, frames 9-10 and 14 predictions but no gt, "
        "frame 7 neither. TrackEval's CLEAR skips ('continue') a timestep without gt or without predictions before "
        "it updates its previous-timestep state, so such frames neither break a track for Frag nor for the "
        "continuation bonus: Frag 0. motmetrics counts every tracked->missed transition inside an object's "
        "tracked span, here the misses in frames 3-4: Frag 1 per object.",
        "motmetrics num_frames counts frames present in either file (13: frame 7 is absent); TrackEval's "
        "CLR_Frames is the number of timesteps 1..max frame (14).",
    ],
    'ids_reused': [
        "Gt objects 3 and 5 leave the scene (frames 5-7 and 6-9) while other objects are still being "
        "tracked. TrackEval resets every gt's 'tracked in the previous timestep' flag at each processed "
        "timestep, so a gt absent from a frame restarts its track on return: +1 Frag each (Frag 2). "
        "motmetrics only looks at the frames where the object is present (no MISS events while absent): "
        "Frag 0.",
        "Object 5 comes back under a new predicted id (9 instead of 8): an id switch in both tools, which "
        "remember an object's last matched id across any gap (motmetrics max_switch_time = inf).",
        "Predicted id 5 is reused for gt 2 after gt 1 left: no switch in either tool (gt 2 has no earlier "
        "match); motmetrics logs a TRANSFER event, which is not part of MOTA.",
    ],
    'low_iou': [
        "Object 2's prediction has IoU exactly 0.5 in every frame (90x90 boxes shifted 30 px): a match in "
        "both tools (motmetrics: distance 1-IoU <= 0.5; TrackEval CLEAR/Identity: IoU >= 0.5 (- eps)).",
        "Object 1 alternates IoU 0.5504 (match) and 0.4493 (miss + FP), which makes fragmentations.",
    ],
    'dense_overlap': [
        "Per-frame matching differs. motmetrics gives unmatched pairs a prohibitive cost and minimises "
        "the summed distance (1-IoU), so it first maximises the number of matches: 3 matches per frame "
        "(IoUs 0.515, 0.538, 0.538). TrackEval CLEAR maximises the summed IoU (plus 1000 per continued "
        "track): 2 matches per frame (0.96 + 0.96 = 1.92 > 1.59), leaving gt 3 missed and pred 3 a FP. "
        "Hence different MOTA/MOTP. ID measures agree (both count per-frame IoU >= 0.5 co-occurrences).",
    ],
    'rematch_after_gap': [
        "Gt 1 is matched to pred 1 in frames 1-3, missed in 4-5 (pred 1 absent, other tracks present), "
        "and in frames 6-8 both pred 1 (IoU 0.6) and pred 3 (IoU 0.905) cover it. motmetrics first "
        "re-establishes the object's last match from any earlier frame (pred 1, still valid): no switch, "
        "pred 3 is a FP. TrackEval only favours matches from the previous processed timestep, which had "
        "none for gt 1, so it takes the higher-IoU pred 3: 1 IDSW, and pred 1 is the FP.",
        "HOTA, unlike CLEAR, matches gt 1 to pred 1 in frames 6-8 (its score is global alignment x IoU, and "
        "pred 1 also overlapped gt 1 in frames 1-3). That IoU is exactly 0.6 (75/125), and alpha[11] is "
        "0.6000000000000001: the pair counts as a TP at that alpha only because TrackEval compares "
        "IoU >= alpha - eps (HOTA_TP 14 at alpha[11], 11 from alpha[12] = 0.65 on).",
    ],
    'large_ids': [
        "Ids are arbitrary integers (gt 1001, 1005, 2000000; pred 3, 42, 57, 999999). TrackEval maps "
        "them to 0..n-1 in sorted order; motmetrics keeps them (as floats). Results must not depend on "
        "the ids' values.",
    ],
    'random_a': [],
    'random_b': [],
}

GENERAL_NOTES = [
    "MOTP: motmetrics 'motp' is the mean distance 1-IoU over matched pairs (lower is better); TrackEval "
    "'MOTP' is the mean IoU (higher is better). With identical matches, MOTP_trackeval = 1 - motp_motmetrics "
    "(up to rounding).",
    "Counts: motmetrics num_matches excludes the switch events; num_detections = num_matches + "
    "num_switches corresponds to TrackEval CLR_TP.",
]


def auto_notes(m, t):
    notes = []

    def differ(a, b, tol=1e-12):
        if a is None or b is None:
            return a is not b
        return abs(a - b) > tol

    pairs = [
        ('MOTA', m['mota'], t['MOTA']),
        ('IDF1', m['idf1'], t['IDF1']),
        ('IDSW', m['num_switches'], t['IDSW']),
        ('Frag', m['num_fragmentations'], t['Frag']),
        ('TP', m['num_detections'], t['CLR_TP']),
        ('FN', m['num_misses'], t['CLR_FN']),
        ('FP', m['num_false_positives'], t['CLR_FP']),
        ('MT', m['mostly_tracked'], t['MT']),
        ('PT', m['partially_tracked'], t['PT']),
        ('ML', m['mostly_lost'], t['ML']),
        ('IDTP', m['idtp'], t['IDTP']),
    ]
    diffs = ['%s motmetrics %s vs TrackEval %s' % (n, a, b) for n, a, b in pairs if differ(a, b)]
    if m['motp'] is not None and differ(1.0 - m['motp'], t['MOTP'], 1e-12):
        diffs.append('MOTP: 1 - motmetrics motp = %r vs TrackEval MOTP = %r' % (1.0 - m['motp'], t['MOTP']))
    if diffs:
        notes.append('Differences: ' + '; '.join(diffs) + '.')
    else:
        notes.append('MOTA, IDF1, IDSW, Frag, TP/FN/FP, MT/PT/ML, IDTP and MOTP (as 1 - motp) agree.')
    return notes


def near_threshold_pairs(data, alphas):
    """IoUs equal to, or within 1e-9 of, 0.5 or a HOTA alpha: (frame, gt row, pred row, IoU, threshold,
    passes 'IoU >= threshold - eps', passes 'IoU >= threshold'). Float rounding could flip these."""
    eps = np.finfo('float').eps
    hits = []
    thresholds = sorted(set([0.5] + [float(a) for a in alphas]))
    for t, sim in enumerate(data['similarity_scores']):
        for (i, j), v in np.ndenumerate(sim):
            for a in thresholds:
                if abs(v - a) < 1e-9:
                    hits.append((t + 1, i, j, float(v), a, bool(v >= a - eps), bool(v >= a)))
    return hits


def compute_case(case_dir):
    m = run_motmetrics(case_dir)
    t, data = run_trackeval(case_dir)
    name = os.path.basename(os.path.normpath(case_dir))
    notes = auto_notes(m, t) + CASE_NOTES.get(name, []) + GENERAL_NOTES
    near = near_threshold_pairs(data, t['alphas'])
    if near:
        flips = [h for h in near if h[5] != h[6]]
        notes.append('%d gt/pred pairs have an IoU equal to (or within 1e-9 of) 0.5 or a HOTA alpha; e.g. '
                     '(frame, gt row, pred row, IoU, threshold, IoU >= thr - eps, IoU >= thr): %r.%s' % (
                         len(near), near[0] if not flips else flips[0],
                         ' For %d of them the comparison depends on TrackEval\'s eps (2.22e-16): '
                         'HOTA compares IoU >= alpha - eps with alpha from np.arange(0.05, 0.99, 0.05) '
                         '(e.g. 0.6000000000000001), CLEAR IoU >= 0.5 - eps, Identity IoU >= 0.5.'
                         % len(flips) if flips else ''))
    out = {
        'case': name,
        'tools': {
            'motmetrics': mm.__version__, 'trackeval': trackeval.__version__, 'numpy': np.__version__,
        },
        'settings': {
            'motmetrics': "mm.io.loadtxt(fmt='mot15-2D'); mm.utils.compare_to_groundtruth(gt, pred, 'iou', "
                          "distth=0.5); lap solver scipy",
            'trackeval': 'HOTA(), CLEAR(THRESHOLD=0.5), Identity(THRESHOLD=0.5) eval_sequence on timesteps '
                         '1..max frame, ids remapped to 0..n-1 in sorted order, IoU from '
                         "_calculate_box_ious(box_format='xywh')",
        },
        'motmetrics': m,
        'trackeval': t,
        'notes': notes,
    }
    path = os.path.join(case_dir, 'expected.json')
    with open(path, 'w') as f:
        f.write(dumps(out))
    return out


def dumps(obj, indent=''):
    """JSON with one line per scalar or list of scalars (floats as Python's shortest repr)."""
    if isinstance(obj, dict):
        inner = indent + '  '
        items = ['%s%s: %s' % (inner, json.dumps(k), dumps(v, inner)) for k, v in obj.items()]
        return '{\n' + ',\n'.join(items) + '\n' + indent + '}' + ('' if indent else '\n')
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        inner = indent + '  '
        return '[\n' + ',\n'.join(inner + dumps(v, inner) for v in obj) + '\n' + indent + ']'
    if isinstance(obj, list) and obj and isinstance(obj[0], str):
        inner = indent + '  '
        return '[\n' + ',\n'.join(inner + json.dumps(v) for v in obj) + '\n' + indent + ']'
    return json.dumps(obj, allow_nan=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('cases', nargs='*', help='case directories (default: every one under tests/data/mot)')
    ap.add_argument('--generate', action='store_true', help='rewrite the seeded random cases first')
    args = ap.parse_args()
    mm.lap.default_solver = 'scipy'
    if args.generate:
        for name, params in RANDOM_CASES.items():
            generate_random_case(name, **params)
    cases = args.cases or sorted(
        os.path.join(MOT_DIR, d) for d in os.listdir(MOT_DIR)
        if os.path.isfile(os.path.join(MOT_DIR, d, 'gt.txt')))
    print('%-18s %8s %8s %6s %6s %6s %6s %5s %5s %8s %8s %8s %8s %8s' % (
        'case', 'MOTA mm', 'MOTA te', 'IDF1mm', 'IDF1te', 'IDSWmm', 'IDSWte', 'Frmm', 'Frte',
        'HOTA', 'DetA', 'AssA', '1-motp', 'MOTP te'))
    for c in cases:
        r = compute_case(c)
        m, t = r['motmetrics'], r['trackeval']
        print('%-18s %8.4f %8.4f %6.4f %6.4f %6d %6d %5d %5d %8.4f %8.4f %8.4f %8.4f %8.4f' % (
            r['case'], m['mota'], t['MOTA'], m['idf1'], t['IDF1'], m['num_switches'], t['IDSW'],
            m['num_fragmentations'], t['Frag'], t['HOTA'], t['DetA'], t['AssA'],
            1 - m['motp'] if m['motp'] is not None else float('nan'), t['MOTP']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
