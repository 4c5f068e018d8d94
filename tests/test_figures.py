"""docs/figures.py: the training curves read from a run folder's logs."""

import json
import os
import sys

import PIL.Image

from clitest import invoke_ok

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs'))
import figures # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

def write_run(run_dir, ticks, snapshots):
    """A run folder's stats.jsonl (ticks: (kimg, total_sec, maintenance_sec)) and metric-fid1k.jsonl
    (snapshots: (label, fid))."""
    os.makedirs(run_dir)
    stat = lambda value: dict(num=1, mean=value, std=0)
    with open(os.path.join(run_dir, 'stats.jsonl'), 'w') as f:
        for kimg, total, maintenance in ticks:
            f.write(json.dumps({'Progress/kimg': stat(kimg), 'Timing/total_sec': stat(total), 'Timing/maintenance_sec': stat(maintenance)}) + '\n')
    with open(os.path.join(run_dir, 'metric-fid1k.jsonl'), 'w') as f:
        for label, fid in snapshots:
            f.write(json.dumps(dict(results=dict(fid1k=fid), metric='fid1k', snapshot_pkl=f'network-snapshot-{label}.pkl')) + '\n')

def test_curve_takes_training_time_without_maintenance(tmp_path):
    # Tick 0 at 0 kimg after 60 s of set-up; a snapshot with metrics after tick 1 (its 900 s are
    # reported by tick 2); fractional labels as six-digit ones.
    write_run(tmp_path / 'run', [(0.032, 70, 60), (8.0, 3670, 100), (16.0, 8170, 900)], [('000008', 40.0), ('000016.000', 25.0)])
    curve = figures.training_curve(str(tmp_path / 'run'), 'fid1k')
    assert [(kimg, round(hours * 3600), fid) for kimg, hours, fid in curve] == [(8.0, 3670 - 160, 40.0), (16.0, 8170 - 1060, 25.0)]

def test_a_finished_network_is_one_point_placed_by_its_training_json(tmp_path):
    # calc_metrics appends a line per evaluation: the latest is the network's.
    os.makedirs(tmp_path / 'net')
    with open(tmp_path / 'net' / 'metric-fid1k.jsonl', 'w') as f:
        for fid in [90.0, 85.0]:
            f.write(json.dumps(dict(results=dict(fid1k=fid), metric='fid1k', snapshot_pkl='models/g.safetensors')) + '\n')
    with open(tmp_path / 'net' / 'training.json', 'w') as f:
        json.dump(dict(kimg=240, training_hours=1.04), f)
    assert figures.training_curve(str(tmp_path / 'net'), 'fid1k') == [(240, 1.04, 85.0)]

def test_curves_figure_is_written(tmp_path):
    write_run(tmp_path / 'a', [(0, 10, 10), (8, 1010, 0)], [('000000', 300.0), ('000008', 80.0)])
    write_run(tmp_path / 'b', [(0, 10, 10), (8, 510, 0)], [('000000', 280.0), ('000008', 120.0)])
    out = tmp_path / 'curves.png'
    invoke_ok(figures.main, ['curves', f'--run=A={tmp_path / "a"}', f'--run=B={tmp_path / "b"}', '--metrics=fid1k', f'--out={out}'])
    assert PIL.Image.open(out).size == (550, 400)
