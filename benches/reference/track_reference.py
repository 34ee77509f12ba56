#!/usr/bin/env python3
"""Reference multi-object trackers on a MOTChallenge det.txt: a MOTChallenge result file out.

    benches/reference/.venv/bin/python benches/reference/track_reference.py \
        --tracker trackers-bytetrack --detections det.txt --out tracks.txt --frame-rate 15 [--json t.json]

Trackers, each at its library's defaults (the constructor's; nothing tuned), with the frame
rate passed where the tracker takes one:

  trackers-bytetrack  `trackers` 2.6.1 ByteTrackTracker(frame_rate=F): high_conf_det_threshold
                      0.6, track_activation_threshold 0.7, minimum_iou_threshold 0.1 (IoU, no score
                      fusion, both rounds; the second round takes every box under 0.6, with no
                      lower bound), minimum_consecutive_frames 2, lost_track_buffer 30 (at
                      30 fps; ceil(F/30*30) frames), XYXY Kalman state. Outputs detection boxes.
  trackers-ocsort     `trackers` 2.6.1 OCSORTTracker(frame_rate=F): high_conf_det_threshold 0.6
                      (lower boxes are ignored), minimum_iou_threshold 0.3,
                      direction_consistency_weight 0.2, delta_t 3, minimum_consecutive_frames 3,
                      lost_track_buffer 30 (at 30 fps). Outputs detection boxes.
  boxmot-bytetrack    boxmot 25.0.0 ByteTrack(frame_rate=int(F)): track_thresh 0.45 (also the
                      new-track threshold), min_conf 0.1, match_thresh 0.8 (1 - IoU x score, first
                      round), second round IoU >= 0.5, track_buffer 25 (at 30 fps). Its YAML
                      (boxmot/configs/trackers/bytetrack.yaml, used by `boxmot track`/create_tracker)
                      has other defaults: track_thresh 0.6, match_thresh 0.9, track_buffer 30.
                      Outputs Kalman-state boxes.
  boxmot-ocsort       boxmot 25.0.0 OcSort(): takes no frame rate; det_thresh 0.3, min_conf 0.1,
                      max_age 30 frames (at any frame rate), min_hits 3, iou_threshold 0.3,
                      delta_t 3, inertia 0.2, use_byte False, asso_func iou. (YAML: det_thresh 0.6,
                      inertia 0.1.) Outputs Kalman-state boxes.

Every frame 1..N is fed (N: the last frame of the detections, or --frames), empty ones too.
Tracks without an id yet (`trackers` reports them as -1) are not written; ids are written
1-based. Time per frame is the time in the trackers' update calls only (not file I/O), printed
with the counts as one JSON line (and written to --json).

boxmot imports torch at module level (boxmot/structures, boxmot/trackers/base.py) although
its NumPy path (an (N, 6) array in, an array out) never calls it. Where torch is not installed
this script puts an empty stand-in module in its place before importing boxmot; any use of it
raises, so a result cannot silently depend on it.
"""

import argparse
import json
import sys
import time
import types

import numpy as np

TRACKERS = ('trackers-bytetrack', 'trackers-ocsort', 'boxmot-bytetrack', 'boxmot-ocsort')
IMAGE_SHAPE = (1080, 1920, 3)


def read_dets(path):
    """{frame: (xyxy float array (n, 4), scores (n,))} and the last frame."""
    raw = np.loadtxt(path, delimiter=',', ndmin=2, usecols=(0, 2, 3, 4, 5, 6)) if _nonempty(path) \
        else np.zeros((0, 6))
    out = {}
    last = 0
    if len(raw):
        frames = raw[:, 0].astype(int)
        last = int(frames.max())
        order = np.argsort(frames, kind='stable')
        raw, frames = raw[order], frames[order]
        bounds = np.flatnonzero(np.diff(frames)) + 1
        for chunk in np.split(raw, bounds):
            xyxy = chunk[:, 1:5].copy()
            xyxy[:, 2] += xyxy[:, 0]
            xyxy[:, 3] += xyxy[:, 1]
            out[int(chunk[0, 0])] = (xyxy, chunk[:, 5].copy())
    return out, last


def _nonempty(path):
    with open(path) as f:
        return any(line.strip() for line in f)


def _torch_standin():
    """An importable module `torch` whose every attribute lookup raises."""
    try:
        import torch  # noqa: F401
        return False
    except ImportError:
        pass

    class _Absent(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith('__'):
                raise AttributeError(name)
            raise RuntimeError('torch.%s used: this boxmot code path needs the real torch' % name)

    mod = _Absent('torch')
    mod.__path__ = []  # a package, so `import torch.x` fails with ImportError, not oddly
    sys.modules['torch'] = mod
    return True


def make_tracker(name, fps):
    """(step function: (xyxy, scores) -> list of (id, x1, y1, x2, y2, score), version)."""
    if name.startswith('trackers-'):
        import supervision as sv
        import trackers

        if name == 'trackers-bytetrack':
            tr = trackers.ByteTrackTracker(frame_rate=fps)
        else:
            tr = trackers.OCSORTTracker(frame_rate=fps)

        def step(xyxy, scores):
            det = sv.Detections(xyxy=xyxy.astype(np.float32), confidence=scores.astype(np.float32),
                                class_id=np.zeros(len(scores), dtype=int))
            res = tr.update(det)
            return [(int(i), *map(float, b), float(c)) for i, b, c in
                    zip(res.tracker_id, res.xyxy, res.confidence) if i >= 0]

        return step, 'trackers ' + _version('trackers')

    standin = _torch_standin()
    if name == 'boxmot-bytetrack':
        from boxmot.trackers.box.bytetrack.tracker import ByteTrack
        tr = ByteTrack(frame_rate=int(round(fps)))
    elif name == 'boxmot-ocsort':
        from boxmot.trackers.box.ocsort.tracker import OcSort
        tr = OcSort()
    else:
        raise SystemExit('unknown tracker %r (one of %s)' % (name, ', '.join(TRACKERS)))
    image = np.zeros(IMAGE_SHAPE, dtype=np.uint8)  # only its size is read

    def step(xyxy, scores):
        dets = np.column_stack([xyxy, scores, np.zeros(len(scores))]).astype(np.float32).reshape(-1, 6)
        res = tr.update(dets, image)  # rows x1, y1, x2, y2, id, conf, cls, det_ind
        return [(int(r[4]), float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[5])) for r in res]

    return step, 'boxmot ' + _version('boxmot') + (' (torch stand-in)' if standin else '')


def _version(dist):
    from importlib.metadata import version
    return version(dist)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--tracker', required=True, choices=TRACKERS)
    ap.add_argument('--detections', required=True, help='MOTChallenge det.txt (frame,-1,x,y,w,h,score,...)')
    ap.add_argument('--out', required=True, help='MOTChallenge result file')
    ap.add_argument('--frame-rate', type=float, default=30.0)
    ap.add_argument('--frames', type=int, default=0, help='frames in the sequence (default: the last det frame)')
    ap.add_argument('--json', help='write the summary here too')
    a = ap.parse_args()

    dets, last = read_dets(a.detections)
    n_frames = max(a.frames, last)
    step, version = make_tracker(a.tracker, a.frame_rate)
    empty = (np.zeros((0, 4)), np.zeros(0))
    lines = []
    ids = set()
    busy = 0.0
    for f in range(1, n_frames + 1):
        xyxy, scores = dets.get(f, empty)
        t0 = time.perf_counter()
        out = step(xyxy, scores)
        busy += time.perf_counter() - t0
        for tid, x1, y1, x2, y2, s in sorted(out):
            ids.add(tid)
            lines.append('%d,%d,%.2f,%.2f,%.2f,%.2f,%.3f,-1,-1,-1' % (f, tid + 1, x1, y1, x2 - x1, y2 - y1, s))
    with open(a.out, 'w') as fh:
        fh.write(''.join(line + '\n' for line in lines))
    summary = dict(tracker=a.tracker, version=version, frame_rate=a.frame_rate, frames=n_frames, boxes=len(lines),
                   tracks=len(ids), ms_per_frame=1000.0 * busy / max(1, n_frames))
    print(json.dumps(summary))
    if a.json:
        with open(a.json, 'w') as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
