#!/usr/bin/env python3
"""TrackEval scores (HOTA, CLEAR MOT, Identity) of MOTChallenge result files, per sequence and
combined over sequences as TrackEval combines them (its metrics' combine_sequences: counts
summed, HOTA's AssA/LocA weighted by TP, and so on).

    # one or more sequences (gt/pred pairs); the last line is the combination
    benches/reference/.venv/bin/python benches/reference/mot_score.py \
        --gt a/gt.txt --pred a/pred.txt [--gt b/gt.txt --pred b/pred.txt ...] [--json out.json]

    # the tracking benchmark's report (benches/track_bench.sh writes DIR)
    benches/reference/.venv/bin/python benches/reference/mot_score.py --bench DIR --out results.json

The per-sequence data dict is built as in mot_goldens.py (TrackEval's metric classes called
directly, without the MOT17 dataset class's preprocessing: every gt row with conf != 0 is an
object, no distractor classes): timesteps 1..max frame of gt and pred, ids remapped to 0..n-1,
IoU from TrackEval's _calculate_box_ious(box_format='xywh'); HOTA(), CLEAR(THRESHOLD=0.5),
Identity(THRESHOLD=0.5).

--bench DIR reads DIR/<level>/fps<F>/gt/<seq>.txt, DIR/<level>/fps<F>/<tracker>/<seq>.txt and
<seq>.json (the tracker's summary, ms_per_frame), and for the tracker `fieldkit` also
<seq>.metrics.json (`fieldkit metrics mot --json`), which it compares with TrackEval's figures
for the same sequence; prints a table per level x fps and writes the whole as JSON.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import trackeval
from trackeval.datasets._base_dataset import _BaseDataset

TRACKER_ORDER = ['fieldkit', 'trackers-bytetrack', 'trackers-ocsort', 'boxmot-bytetrack', 'boxmot-ocsort']
# fieldkit metrics mot JSON key -> TrackEval figure, for the agreement check
FIELDKIT_KEYS = [('hota', 'HOTA'), ('deta', 'DetA'), ('assa', 'AssA'), ('loca', 'LocA'), ('mota', 'MOTA'),
                 ('motp', 'MOTP'), ('idf1', 'IDF1'), ('id_switches', 'IDSW'), ('fragmentations', 'Frag')]


def read_mot(path, gt=False):
    """(n, 6) array: frame, id, x, y, w, h. In a gt file, rows with conf (column 7) 0 are dropped."""
    rows = []
    with open(path) as f:
        for line in f:
            rec = line.strip().split(',')
            if len(rec) < 6:
                continue
            if gt and len(rec) > 6 and float(rec[6]) == 0:
                continue
            rows.append([float(v) for v in rec[:6]])
    return np.array(rows, dtype=float).reshape(-1, 6)


def build_data(gt, pr):
    """TrackEval's per-sequence dict from gt and pred arrays (frame, id, x, y, w, h)."""
    n_t = int(max(gt[:, 0].max() if len(gt) else 0, pr[:, 0].max() if len(pr) else 0))
    g_ids = np.unique(gt[:, 1]).astype(int) if len(gt) else np.zeros(0, int)
    p_ids = np.unique(pr[:, 1]).astype(int) if len(pr) else np.zeros(0, int)
    gmap = {u: i for i, u in enumerate(g_ids)}
    pmap = {u: i for i, u in enumerate(p_ids)}
    gt_by = _split_by_frame(gt, n_t)
    pr_by = _split_by_frame(pr, n_t)
    data = {'gt_ids': [], 'tracker_ids': [], 'similarity_scores': [], 'gt_dets': [], 'tracker_dets': []}
    for t in range(n_t):
        g, p = gt_by[t], pr_by[t]
        gd, pd_ = g[:, 2:6].copy(), p[:, 2:6].copy()
        data['gt_ids'].append(np.array([gmap[int(i)] for i in g[:, 1]], dtype=int))
        data['tracker_ids'].append(np.array([pmap[int(i)] for i in p[:, 1]], dtype=int))
        data['gt_dets'].append(gd)
        data['tracker_dets'].append(pd_)
        data['similarity_scores'].append(_BaseDataset._calculate_box_ious(gd, pd_, box_format='xywh'))
    data['num_timesteps'] = n_t
    data['num_gt_dets'] = len(gt)
    data['num_tracker_dets'] = len(pr)
    data['num_gt_ids'] = len(g_ids)
    data['num_tracker_ids'] = len(p_ids)
    return data


def _split_by_frame(a, n_t):
    out = [np.zeros((0, 6))] * n_t
    if not len(a):
        return out
    a = a[np.argsort(a[:, 0], kind='stable')]
    frames = a[:, 0].astype(int)
    bounds = np.flatnonzero(np.diff(frames)) + 1
    for chunk in np.split(a, bounds):
        out[int(chunk[0, 0]) - 1] = chunk
    return out


def metric_objects():
    return (trackeval.metrics.HOTA(),
            trackeval.metrics.CLEAR({'THRESHOLD': 0.5, 'PRINT_CONFIG': False}),
            trackeval.metrics.Identity({'THRESHOLD': 0.5, 'PRINT_CONFIG': False}))


def eval_sequence(gt_path, pred_path):
    """Raw TrackEval result dicts {'HOTA': ..., 'CLEAR': ..., 'Identity': ...} of one sequence."""
    data = build_data(read_mot(gt_path, gt=True), read_mot(pred_path))
    hota, clear, ident = metric_objects()
    res = {'HOTA': hota.eval_sequence(data), 'CLEAR': clear.eval_sequence(data),
           'Identity': ident.eval_sequence(data)}
    res['_ids'] = (data['num_gt_ids'], data['num_tracker_ids'])
    return res


def combine(per_seq):
    """TrackEval's combination of raw per-sequence results {seq: res}."""
    hota, clear, ident = metric_objects()
    out = {'HOTA': hota.combine_sequences({s: r['HOTA'] for s, r in per_seq.items()}),
           'CLEAR': clear.combine_sequences({s: r['CLEAR'] for s, r in per_seq.items()}),
           'Identity': ident.combine_sequences({s: r['Identity'] for s, r in per_seq.items()})}
    out['_ids'] = tuple(sum(r['_ids'][k] for r in per_seq.values()) for k in (0, 1))
    return out


def summary(res):
    """Plain figures of a raw result."""
    h, c, i = res['HOTA'], res['CLEAR'], res['Identity']
    out = {k: float(np.mean(h[k])) for k in ('HOTA', 'DetA', 'AssA', 'LocA', 'DetRe', 'DetPr')}
    for k in ('MOTA', 'MOTP', 'CLR_Re', 'CLR_Pr'):
        out[k] = _f(c[k])
    for k in ('IDSW', 'Frag', 'CLR_TP', 'CLR_FN', 'CLR_FP', 'MT', 'PT', 'ML'):
        out[k] = int(round(float(c[k])))
    for k in ('IDF1', 'IDR', 'IDP'):
        out[k] = _f(i[k])
    out['gt_ids'], out['pred_ids'] = (int(v) for v in res['_ids'])
    return out


def _f(v):
    v = float(v)
    return None if math.isnan(v) else v


def fmt_row(name, s, ms=None):
    return '%-20s %6.2f %6.2f %6.2f %7.2f %6.2f %5d %6d %6s' % (
        name, 100 * s['HOTA'], 100 * s['DetA'], 100 * s['AssA'], 100 * s['MOTA'], 100 * s['IDF1'], s['IDSW'],
        s['pred_ids'], '%.3f' % ms if ms is not None else '-')


HEADER = '%-20s %6s %6s %6s %7s %6s %5s %6s %6s' % ('tracker', 'HOTA', 'DetA', 'AssA', 'MOTA', 'IDF1', 'IDSW',
                                                    'ids', 'ms/fr')


# ---------------------------------------------------------------------------------------------
# The benchmark report
# ---------------------------------------------------------------------------------------------

def _fps_key(name):
    return float(name[3:])


def _trackers_in(d):
    """Tracker result folders: the known ones in TRACKER_ORDER, then any other (fieldkit variants)."""
    dirs = {t for t in os.listdir(d) if os.path.isdir(os.path.join(d, t)) and t not in ('gt', 'det')}
    return [t for t in TRACKER_ORDER if t in dirs] + sorted(dirs - set(TRACKER_ORDER))


def bench_report(root, out_path, meta_path=None):
    report = {'results': {}, 'sim': {}, 'fieldkit_vs_trackeval': {'compared': [], 'max_abs_diff': {},
                                                                   'differences': []}}
    if meta_path and os.path.exists(meta_path):
        with open(meta_path) as f:
            report['settings'] = json.load(f)
    levels = [lv for lv in ('low', 'medium', 'high') if os.path.isdir(os.path.join(root, lv))]
    maxdiff = {k: 0.0 for k, _ in FIELDKIT_KEYS}
    lines = []
    for lv in levels:
        for fps_dir in sorted(os.listdir(os.path.join(root, lv)), key=_fps_key, reverse=True):
            d = os.path.join(root, lv, fps_dir)
            fps = _fps_key(fps_dir)
            seqs = sorted(f[:-4] for f in os.listdir(os.path.join(d, 'gt')) if f.endswith('.txt'))
            sim = {}
            for s in seqs:
                p = os.path.join(d, 'gt', s + '.sim.json')
                if os.path.exists(p):
                    with open(p) as f:
                        sim[s] = json.load(f)
            report['sim'].setdefault(lv, {})['%g' % fps] = sim
            trackers = _trackers_in(d)
            block = {}
            lines.append('')
            lines.append('== level %s, %g fps (%d sequences, %d frames) ==' % (
                lv, fps, len(seqs), sum(v.get('frames', 0) for v in sim.values())))
            lines.append(HEADER)
            for t in trackers:
                per_seq, per_sum, busy, frames = {}, {}, 0.0, 0
                for s in seqs:
                    pred = os.path.join(d, t, s + '.txt')
                    if not os.path.exists(pred):
                        raise SystemExit('missing %s' % pred)
                    per_seq[s] = eval_sequence(os.path.join(d, 'gt', s + '.txt'), pred)
                    per_sum[s] = summary(per_seq[s])
                    with open(os.path.join(d, t, s + '.json')) as f:
                        tj = json.load(f)
                    per_sum[s]['ms_per_frame'] = tj['ms_per_frame']
                    busy += tj['ms_per_frame'] * tj['frames']
                    frames += tj['frames']
                    mpath = os.path.join(d, t, s + '.metrics.json')
                    if os.path.exists(mpath):
                        with open(mpath) as f:
                            fk = json.load(f)
                        diffs = {}
                        for fk_key, te_key in FIELDKIT_KEYS:
                            a, b = fk.get(fk_key), per_sum[s].get(te_key)
                            if a is None or b is None:
                                continue
                            diff = abs(float(a) - float(b))
                            maxdiff[fk_key] = max(maxdiff[fk_key], diff)
                            if diff > 1e-9:
                                diffs[fk_key] = (a, b)
                        report['fieldkit_vs_trackeval']['compared'].append('%s/%s/%s' % (lv, fps_dir, s))
                        if diffs:
                            report['fieldkit_vs_trackeval']['differences'].append(
                                {'case': '%s/%s/%s' % (lv, fps_dir, s),
                                 'fieldkit_vs_trackeval': {k: list(v) for k, v in diffs.items()}})
                comb = summary(combine(per_seq)) if len(per_seq) > 1 else dict(per_sum[seqs[0]])
                comb['ms_per_frame'] = busy / max(1, frames)
                block[t] = {'combined': comb, 'per_sequence': per_sum}
                lines.append(fmt_row(t, comb, comb['ms_per_frame']))
            report['results'].setdefault(lv, {})['%g' % fps] = block
    report['fieldkit_vs_trackeval']['max_abs_diff'] = maxdiff
    # HOTA overview: trackers x conditions
    conds = [(lv, f) for lv in report['results'] for f in report['results'][lv]]
    trackers = [t for t in TRACKER_ORDER if any(t in report['results'][lv][f] for lv, f in conds)] + sorted(
        {t for lv, f in conds for t in report['results'][lv][f]} - set(TRACKER_ORDER))
    lines.append('')
    lines.append('== HOTA (combined) by level / fps ==')
    lines.append('%-20s ' % 'tracker' + ' '.join('%11s' % ('%s/%s' % (lv[:3], f)) for lv, f in conds))
    for t in trackers:
        lines.append('%-20s ' % t + ' '.join(
            '%11s' % ('%.2f' % (100 * report['results'][lv][f][t]['combined']['HOTA'])
                      if t in report['results'][lv][f] else '-') for lv, f in conds))
    fv = report['fieldkit_vs_trackeval']
    lines.append('')
    lines.append('fieldkit metrics mot vs TrackEval on %d sequence results: %s; largest |difference| %s' % (
        len(fv['compared']), 'identical (to 1e-9)' if not fv['differences'] else
        '%d differ' % len(fv['differences']),
        ', '.join('%s %.2g' % (k, v) for k, v in maxdiff.items())))
    text = '\n'.join(lines)
    print(text)
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, 'w') as f:
            json.dump(report, f, indent=1, allow_nan=False)
            f.write('\n')
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--gt', action='append', default=[])
    ap.add_argument('--pred', action='append', default=[])
    ap.add_argument('--json', help='write the figures (per sequence and combined) as JSON')
    ap.add_argument('--bench', help='benchmark directory (track_bench.sh)')
    ap.add_argument('--meta', help='with --bench: settings JSON to include')
    ap.add_argument('--out', help='with --bench: results JSON')
    a = ap.parse_args()
    if a.bench:
        bench_report(a.bench, a.out, a.meta)
        return 0
    if not a.gt or len(a.gt) != len(a.pred):
        ap.error('give --gt and --pred in pairs (or --bench)')
    per_seq = {}
    print(HEADER)
    for k, (g, p) in enumerate(zip(a.gt, a.pred)):
        name = '%d:%s' % (k, os.path.basename(os.path.dirname(os.path.dirname(g))) or g)
        per_seq[name] = eval_sequence(g, p)
        print(fmt_row(name[:20], summary(per_seq[name])))
    out = {'per_sequence': {s: summary(r) for s, r in per_seq.items()}}
    if len(per_seq) > 1:
        out['combined'] = summary(combine(per_seq))
        print(fmt_row('COMBINED', out['combined']))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(out, f, indent=1, allow_nan=False)
    return 0


if __name__ == '__main__':
    sys.exit(main())
