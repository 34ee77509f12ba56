#!/usr/bin/env python3
"""Seeded detection simulator: a MOTChallenge gt.txt in, a det.txt (and the matching gt) out.

The videos of the shared tracking sequences are lost, so trackers are compared on detections
simulated from the ground truth: misses (independent and in runs, like occlusion), box jitter,
false positives, score noise and frame-rate subsampling.

    benches/reference/.venv/bin/python benches/reference/sim_detections.py \
        --gt SEQ/gt/gt.txt --out-det det.txt --out-gt gt.txt --fps 15 --level medium [--seed 0]

Frames. The source is --source-fps (60) video. The clip runs from the first to the last
annotated frame; --fps F keeps every (source-fps / F)-th frame of it (60: all, 15: every 4th,
5: every 12th), starting with the first annotated one, and renumbers the kept frames from 1.
--max-frames N first cuts the clip to its first N source frames (quick runs).

The detector is simulated on every source frame, in frame order, and then subsampled: with one
seed, the 15 and 5 fps detections are subsets of the 60 fps ones, so the frame rate is the only
difference between them. Miss runs and rates are given in seconds, so a level means the same
detector at any frame rate.

Per ground-truth box (gt rows with conf 0 are dropped first; all other rows are objects):
  * occlusion runs: each object starts a run of missed frames at --occl-rate runs per second
    (of its presence); a run lasts an exponential --occl-len seconds on average (at least one
    source frame);
  * misses: outside runs, each box is missed with probability --p-miss;
  * jitter: a detected box's centre moves by N(0, jitter * w) in x and N(0, jitter * h) in y,
    its width and height are multiplied by exp(N(0, jitter));
  * score: N(--score-mean, --score-sd), clipped to [0.05, 0.99]; but a box whose gt visibility
    is below 1 (the sequences mark partly hidden cows 0.5) is scored low (uniform in
    [--low-min, --low-max]) with probability --p-low-occluded, and any other box with
    probability --p-low.
False positives, per source frame: Poisson(--fp-rate) boxes of a cow's size (the w and h of a
random gt box of the sequence, times exp(N(0, 0.2)) each); a share --fp-near of them (in frames
with cows) lies beside a real cow (centre offset by 0.3-1.0 of its width and height in a random
direction: double detections, a calf, a shadow), the rest anywhere in the image. A false
positive scores like a true box with probability --fp-high, otherwise uniform in
[0.05, --low-max] (mostly low). All boxes are clipped to the image (--width x --height); boxes
narrower or lower than 4 px after clipping are dropped.

Levels (presets; any option given on the command line overrides its preset value):

    level   p-miss occl-rate occl-len jitter fp-rate fp-near score-mean/sd p-low p-low-occl fp-high
    low      0.02    0.02/s    0.3 s   0.03     0.2    0.3     0.85/0.07   0.02     0.3      0.05
    medium   0.06    0.05/s    0.6 s   0.06     1.0    0.4     0.75/0.10   0.05     0.6      0.10
    high     0.12    0.10/s    1.0 s   0.10     3.0    0.5     0.65/0.15   0.10     0.9      0.20

(low-min 0.1 and low-max 0.5 at every level.) At `high`, 16 % of the true boxes score under 0.5
by the score noise alone (31 % of the detected true boxes of the four verschoor-cows sequences
with the ones scored low on purpose), and ~0.6 false positives a frame score like true boxes.

Output: det.txt as `frame,-1,x,y,w,h,score,-1,-1,-1` (2 decimals, frames 1..N in order), the gt
rows of the kept frames renumbered the same way (columns as read), and a summary line on stdout
(JSON): frames, gt boxes, detected true boxes, false positives, low-score true boxes.
"""

import argparse
import json
import math
import sys

import numpy as np

PRESETS = {
    'low': dict(p_miss=0.02, occl_rate=0.02, occl_len=0.3, jitter=0.03, fp_rate=0.2, fp_near=0.3,
                score_mean=0.85, score_sd=0.07, p_low=0.02, p_low_occluded=0.3, fp_high=0.05),
    'medium': dict(p_miss=0.06, occl_rate=0.05, occl_len=0.6, jitter=0.06, fp_rate=1.0, fp_near=0.4,
                   score_mean=0.75, score_sd=0.10, p_low=0.05, p_low_occluded=0.6, fp_high=0.10),
    'high': dict(p_miss=0.12, occl_rate=0.10, occl_len=1.0, jitter=0.10, fp_rate=3.0, fp_near=0.5,
                 score_mean=0.65, score_sd=0.15, p_low=0.10, p_low_occluded=0.9, fp_high=0.20),
}
COMMON = dict(low_min=0.1, low_max=0.5)


def read_gt(path):
    """Rows as lists of strings (frame, id, x, y, w, h, conf, class, vis, ...), conf-0 rows dropped."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            rec = [c.strip() for c in line.split(',')]
            if len(rec) < 6:
                raise SystemExit('%s:%d: expected at least 6 columns' % (path, n))
            if len(rec) > 6 and float(rec[6]) == 0:
                continue
            rows.append(rec)
    return rows


def fmt(v):
    s = '%.2f' % v
    s = s.rstrip('0').rstrip('.')
    return '0' if s in ('-0', '') else s


def clip_box(x, y, w, h, W, H):
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(W), x + w), min(float(H), y + h)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return x1, y1, x2 - x1, y2 - y1


def simulate(rows, p, fps, source_fps, max_frames, W, H, seed):
    step = source_fps / fps
    if abs(step - round(step)) > 1e-9 or step < 1:
        raise SystemExit('--fps %g must divide --source-fps %g' % (fps, source_fps))
    step = int(round(step))
    frames = sorted({int(float(r[0])) for r in rows})
    first, last = frames[0], frames[-1]
    if max_frames:
        last = min(last, first + max_frames - 1)
    by_frame = {}
    for r in rows:
        f = int(float(r[0]))
        if f <= last:
            by_frame.setdefault(f, []).append(r)
    sizes = np.array([(float(r[4]), float(r[5])) for r in rows], dtype=float)

    rng = np.random.default_rng(seed)
    run_left = {}  # object id -> source frames left in its miss run
    p_run = p['occl_rate'] / source_fps
    mean_run = p['occl_len'] * source_fps
    dets, gt_out = [], []
    stats = dict(frames=0, gt_boxes=0, detected=0, missed=0, false_positives=0, low_score_true=0,
                 low_score_fp=0)

    def score_true():
        return float(np.clip(rng.normal(p['score_mean'], p['score_sd']), 0.05, 0.99))

    for f in range(first, last + 1):
        objs = sorted(by_frame.get(f, []), key=lambda r: int(float(r[1])))
        keep = (f - first) % step == 0
        out_f = (f - first) // step + 1
        frame_dets = []
        # true boxes (every source frame draws the same numbers whether kept or not)
        for r in objs:
            oid = int(float(r[1]))
            x, y, w, h = (float(v) for v in r[2:6])
            vis = float(r[8]) if len(r) > 8 else 1.0
            u_run, u_miss = rng.random(), rng.random()
            noise = rng.normal(0.0, 1.0, 4)
            u_low, u_lowscore, base_score = rng.random(), rng.random(), score_true()
            left = run_left.get(oid, 0)
            if left == 0 and u_run < p_run:
                left = max(1, int(round(rng.exponential(mean_run))))
            if left > 0:
                run_left[oid] = left - 1
                missed = True
            else:
                missed = u_miss < p['p_miss']
            if keep:
                stats['gt_boxes'] += 1
            if missed:
                if keep:
                    stats['missed'] += 1
                continue
            j = p['jitter']
            cx = x + w / 2 + noise[0] * j * w
            cy = y + h / 2 + noise[1] * j * h
            nw = w * math.exp(noise[2] * j)
            nh = h * math.exp(noise[3] * j)
            low = u_low < (p['p_low_occluded'] if vis < 1.0 else p['p_low'])
            score = p['low_min'] + u_lowscore * (p['low_max'] - p['low_min']) if low else base_score
            box = clip_box(cx - nw / 2, cy - nh / 2, nw, nh, W, H)
            if box is None or not keep:
                continue
            stats['detected'] += 1
            stats['low_score_true'] += score < 0.5
            frame_dets.append(box + (score,))
        # false positives
        n_fp = int(rng.poisson(p['fp_rate']))
        for _ in range(n_fp):
            sw, sh = sizes[int(rng.integers(len(sizes)))]
            sw *= math.exp(rng.normal(0.0, 0.2))
            sh *= math.exp(rng.normal(0.0, 0.2))
            u_near, u_high = rng.random(), rng.random()
            high_score, low_score = score_true(), 0.05 + rng.random() * (p['low_max'] - 0.05)
            if objs and u_near < p['fp_near']:
                r = objs[int(rng.integers(len(objs)))]
                x, y, w, h = (float(v) for v in r[2:6])
                ox = rng.uniform(0.3, 1.0) * w * (1 if rng.random() < 0.5 else -1)
                oy = rng.uniform(0.3, 1.0) * h * (1 if rng.random() < 0.5 else -1)
                cx, cy = x + w / 2 + ox, y + h / 2 + oy
            else:
                cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            score = high_score if u_high < p['fp_high'] else low_score
            box = clip_box(cx - sw / 2, cy - sh / 2, sw, sh, W, H)
            if box is None or not keep:
                continue
            stats['false_positives'] += 1
            stats['low_score_fp'] += score < 0.5
            frame_dets.append(box + (score,))
        if not keep:
            continue
        stats['frames'] += 1
        for x, y, w, h, s in frame_dets:
            dets.append('%d,-1,%s,%s,%s,%s,%.3f,-1,-1,-1' % (out_f, fmt(x), fmt(y), fmt(w), fmt(h), s))
        for r in objs:
            gt_out.append(','.join([str(out_f)] + r[1:]))
    return dets, gt_out, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--gt', required=True, help='MOTChallenge gt.txt of the source video')
    ap.add_argument('--out-det', required=True, help='simulated detections (MOTChallenge det.txt)')
    ap.add_argument('--out-gt', required=True, help='the gt rows of the kept frames, renumbered')
    ap.add_argument('--fps', type=float, default=60, help='output frame rate (60, 15, 5; default 60)')
    ap.add_argument('--source-fps', type=float, default=60, help='frame rate of the gt (default 60)')
    ap.add_argument('--level', choices=sorted(PRESETS), default='medium', help='preset (default medium)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--max-frames', type=int, default=0, help='only the first N source frames of the clip')
    ap.add_argument('--width', type=int, default=1920)
    ap.add_argument('--height', type=int, default=1080)
    for k in list(PRESETS['low']) + list(COMMON):
        ap.add_argument('--' + k.replace('_', '-'), type=float, default=None,
                        help='override the preset (%s)' % ' / '.join(
                            str(PRESETS[lv].get(k, COMMON.get(k))) for lv in ('low', 'medium', 'high')))
    a = ap.parse_args()
    p = dict(PRESETS[a.level], **COMMON)
    for k in p:
        v = getattr(a, k)
        if v is not None:
            p[k] = v
    rows = read_gt(a.gt)
    if not rows:
        raise SystemExit('%s: no gt rows' % a.gt)
    dets, gt_out, stats = simulate(rows, p, a.fps, a.source_fps, a.max_frames, a.width, a.height, a.seed)
    with open(a.out_det, 'w') as f:
        f.write(''.join(line + '\n' for line in dets))
    with open(a.out_gt, 'w') as f:
        f.write(''.join(line + '\n' for line in gt_out))
    print(json.dumps(dict(level=a.level, fps=a.fps, seed=a.seed, params=p, **stats)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
