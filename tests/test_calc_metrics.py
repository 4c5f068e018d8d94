"""calc_metrics.py and the metric registry end to end on the CPU: a tiny CREPS
snapshot, a folder of PNGs and a tiny detector given through --inception;
the JSON lines, the run folder's metric-*.jsonl, the dataset statistics
cache, the same results from two processes as from one, and the one-line
errors.

The metrics computed are FID and KID as registered, with 24 generated images
instead of 1000 or 50000 (registered by the tests for their duration)."""

import json
import os
import pickle
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

import calc_metrics
import dnnlib
from metrics import frechet_inception_distance
from metrics import kernel_inception_distance
from metrics import metric_main
from metrics import metric_utils
from training.networks_creps import Generator

from clitest import assert_clean_error, invoke, invoke_ok
from numerics import torch_threads
from test_metric_utils import write_detector_pickle, write_images

#----------------------------------------------------------------------------

def fid24_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return dict(fid24_full=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=24))

def kid24_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return dict(kid24_full=kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=24, num_subsets=20, max_subset_size=1000))

TEST_METRICS = dict(fid24_full=fid24_full, kid24_full=kid24_full)

def make_generator():
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
        biline_channels=8, rank=2, mapping_kwargs=dict(num_layers=2)).eval()

def dataset_kwargs(path):
    return dict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False, max_size=8,
        xflip=True, resolution=16, random_seed=0)

@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A run folder with a snapshot (G_ema and training_set_kwargs), the dataset
    it names, and a detector; a fresh cache folder; the test metrics registered."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv(metric_utils.INCEPTION_ENV, raising=False)
    monkeypatch.delenv(metric_utils.VGG16_ENV, raising=False)
    monkeypatch.setattr(metric_utils, '_feature_detector_cache', dict())
    for name, fn in TEST_METRICS.items():
        monkeypatch.setitem(metric_main._metric_dict, name, fn)
    write_images(tmp_path / 'data', 8)
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    snapshot = str(run_dir / 'network-snapshot-000000.pkl')
    with open(snapshot, 'wb') as f:
        pickle.dump({'G_ema': make_generator(), 'training_set_kwargs': dataset_kwargs(str(tmp_path / 'data'))}, f)
    return dnnlib.EasyDict(root=tmp_path, run_dir=str(run_dir), snapshot=snapshot, data=str(tmp_path / 'data'),
        detector=write_detector_pickle(tmp_path / 'tiny.pkl'))

def run(args):
    return invoke(calc_metrics.calc_metrics, args)

def run_ok(args):
    return invoke_ok(calc_metrics.calc_metrics, args)

def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith('{')]

def images_seen(detector_url):
    return int(metric_utils._feature_detector_cache[(detector_url, torch.device('cpu'))].num_images)

#----------------------------------------------------------------------------

def test_snapshot_metrics_are_reported_and_the_dataset_statistics_cached(setup):
    args = ['--network', setup.snapshot, '--metrics', 'fid24_full,kid24_full', '--inception', setup.detector, '--device', 'cpu']
    first = run_ok(args)
    lines = json_lines(first.stdout)
    assert first.stdout.splitlines() == [json.dumps(line) for line in lines] # stdout holds the JSON lines only.
    assert [line['metric'] for line in lines] == ['fid24_full', 'kid24_full']
    fid, kid = lines[0]['results']['fid24_full'], lines[1]['results']['kid24_full']
    assert fid > 0 and np.isfinite(kid)
    assert lines[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl' and lines[0]['num_gpus'] == 1
    assert 'Dataset options' in first.stderr and 'generator features' in first.stderr
    for line in lines:
        with open(os.path.join(setup.run_dir, f'metric-{line["metric"]}.jsonl')) as f:
            assert json.loads(f.read()) == line
    # The two metrics share their features: the 8 real and 24 generated images pass the detector
    # once, and one cache file (all the real features) serves both.
    assert len(os.listdir(setup.root / 'cache' / 'gan-metrics')) == 1
    assert images_seen(setup.detector) == 8 + 24
    assert metric_utils.INCEPTION_ENV not in os.environ # The override is the command's only.

    # Again: real statistics from the cache (the detector sees only generated images), same numbers.
    second = run_ok(args + ['--verbose', 'false'])
    assert second.stderr == ''
    assert images_seen(setup.detector) == 8 + 2 * 24
    again = json_lines(second.stdout)
    assert again[0]['results'] == lines[0]['results'] and again[1]['results'] == lines[1]['results']

    with open(os.path.join(setup.run_dir, 'metric-fid24_full.jsonl')) as f:
        assert len(f.read().splitlines()) == 2

    # Each metric alone, from its own features: the numbers of the shared run (FID from running
    # sums instead of all features: equal to rounding).
    for line in lines:
        alone = json_lines(run_ok(args[:2] + ['--metrics', line['metric']] + args[4:]).stdout)[0]['results']
        assert alone == pytest.approx(line['results'], rel=1e-9)

def test_dataset_from_training_options_or_data(setup):
    with open(setup.snapshot, 'wb') as f:
        pickle.dump({'G_ema': make_generator(), 'training_set_kwargs': None}, f)
    result = run(['--network', setup.snapshot, '--metrics', 'fid24_full', '--inception', setup.detector])
    assert_clean_error(result, 'does not say which dataset', '--data')

    with open(os.path.join(setup.run_dir, 'training_options.json'), 'w') as f:
        json.dump({'training_set_kwargs': dataset_kwargs(setup.data)}, f)
    looked_up = json_lines(run_ok(['--network', setup.snapshot, '--metrics', 'fid24_full', '--inception', setup.detector]).stdout)
    given = json_lines(run_ok(['--network', setup.snapshot, '--metrics', 'fid24_full', '--inception', setup.detector,
        '--data', setup.data, '--run-dir', setup.root / 'elsewhere', '--mirror', '1']).stdout)
    assert given[0]['results'] == looked_up[0]['results'] # *_full turns x-flips off whatever --mirror says.
    assert os.path.isfile(setup.root / 'elsewhere' / 'metric-fid24_full.jsonl')
    assert given[0]['snapshot_pkl'] == os.path.relpath(setup.snapshot, setup.root / 'elsewhere')

def test_dataset_options_from_files_cannot_run_code(setup):
    # A snapshot's training_set_kwargs, or training_options.json beside it, names the dataset class:
    # a stranger's file could name any callable that takes keywords.
    marker = setup.root / 'ran'
    hostile = dict(class_name='subprocess.run', args=f'touch {marker}', shell=True)
    with open(setup.snapshot, 'wb') as f:
        pickle.dump({'G_ema': make_generator(), 'training_set_kwargs': hostile}, f)
    base = ['--network', setup.snapshot, '--metrics', 'fid24_full', '--inception', setup.detector]
    assert_clean_error(run(base), "refused to construct 'subprocess.run'", '--data')
    with open(setup.snapshot, 'wb') as f:
        pickle.dump({'G_ema': make_generator(), 'training_set_kwargs': None}, f)
    with open(os.path.join(setup.run_dir, 'training_options.json'), 'w') as f:
        json.dump({'training_set_kwargs': hostile}, f)
    assert_clean_error(run(base), "refused to construct 'subprocess.run'")
    assert not marker.exists()
    # Values other than plain names and numbers are refused before anything is built.
    with open(os.path.join(setup.run_dir, 'training_options.json'), 'w') as f:
        json.dump({'training_set_kwargs': dict(dataset_kwargs(setup.data), path=[setup.data])}, f)
    assert_clean_error(run(base), 'training_options.json', 'not plain names and values')
    with open(os.path.join(setup.run_dir, 'training_options.json'), 'w') as f:
        json.dump({'training_set_kwargs': dict(dataset_kwargs(setup.data), colour='red')}, f)
    assert_clean_error(run(base), 'colour')

#----------------------------------------------------------------------------

def _two_process_worker(rank, setup, temp_dir, out_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(backend='gloo', init_method=f'file://{temp_dir}/init', rank=rank, world_size=2)
    os.environ['DNNLIB_CACHE_DIR'] = str(setup.root / 'cache2')
    for name, fn in TEST_METRICS.items():
        metric_main.register_metric(fn)
    results = {}
    for metric in TEST_METRICS:
        result = metric_main.calc_metric(metric, G=make_generator(), dataset_kwargs=dataset_kwargs(setup.data),
            num_gpus=2, rank=rank, device='cpu')
        results.update(result.results)
    with open(f'{out_file}.{rank}', 'w') as f:
        json.dump(results, f)

@pytest.mark.numerics
def test_two_processes_give_the_results_of_one(setup, monkeypatch):
    monkeypatch.setenv(metric_utils.INCEPTION_ENV, setup.detector)
    # One thread, as in the workers: a generated pixel that rounds differently can change its uint8 value,
    # and that moves FID and KID far more than float rounding. The detector sees batches of 24 here and
    # of 12 in each worker; its features may differ by float32 rounding, hence rel=1e-6.
    single = {}
    with torch_threads(1):
        for metric in TEST_METRICS:
            single.update(metric_main.calc_metric(metric, G=make_generator(), dataset_kwargs=dataset_kwargs(setup.data), device='cpu').results)
    out_file = str(setup.root / 'results')
    torch.multiprocessing.spawn(_two_process_worker, args=(setup, str(setup.root), out_file), nprocs=2)
    for rank in range(2):
        with open(f'{out_file}.{rank}') as f:
            assert json.load(f) == pytest.approx(single, rel=1e-6) # Rank 1 gets rank 0's numbers.
    assert len(os.listdir(setup.root / 'cache2' / 'gan-metrics')) == 2 # Written once, by rank 0.

#----------------------------------------------------------------------------

def test_cpu_variants_use_a_fixed_random_sample_of_the_reals(setup, monkeypatch):
    monkeypatch.setattr(metric_main, 'CPU_SAMPLE_SIZE', 5) # 10000 real and generated images, scaled down.
    args = ['--network', setup.snapshot, '--data', setup.data, '--metrics', 'fid10k,kid10k', '--inception', setup.detector, '--device', 'cpu']
    lines = json_lines(run_ok(args).stdout)
    assert [line['metric'] for line in lines] == ['fid10k', 'kid10k'] and all(np.isfinite(list(line['results'].values())) for line in lines)
    first = images_seen(setup.detector)
    again = json_lines(run_ok(args).stdout) # The same sample of reals again: its statistics come from the cache.
    generated = images_seen(setup.detector) - first
    assert first - generated == 5 # Of the 8 real images, 5 (the dataset's max_size subset), shared by both metrics.
    assert [line['results'] for line in again] == [line['results'] for line in lines]

def test_curve_variants_share_a_small_sample_of_the_reals(setup, monkeypatch):
    monkeypatch.setattr(metric_main, 'CURVE_REAL_SIZE', 3) # 2000 real images, scaled down.
    args = ['--network', setup.snapshot, '--data', setup.data, '--metrics', 'fid1k,kid1k', '--inception', setup.detector, '--device', 'cpu']
    lines = json_lines(run_ok(args).stdout)
    assert [line['metric'] for line in lines] == ['fid1k', 'kid1k'] and all(np.isfinite(list(line['results'].values())) for line in lines)
    assert images_seen(setup.detector) == 3 + 1000 # One pass over each, for both metrics.

def test_registry():
    names = metric_main.list_valid_metrics()
    expected = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'eqt50k_int', 'eqt50k_frac', 'eqr50k',
        'fid50k', 'kid50k', 'pr50k3', 'is50k', 'sc50k_x2', 'sc50k_x4', 'fid50k_full_x2', 'fid50k_full_x4',
        'fid10k', 'kid10k', 'fid10k_x2', 'fid10k_x4', 'eqt10k_int',
        'fid1k', 'kid1k', 'fid1k_full', 'kid1k_full', 'pr1k3_full', 'sc1k_x2', 'sc1k_x4', 'sc1k_x8', 'fid1k_full_x2']
    assert [name for name in names if name in expected] == expected # In this order, for calc_metrics' error message.
    assert all(metric_main.is_valid_metric(name) for name in names)
    assert not metric_main.is_valid_metric('fid')
    with pytest.raises(ValueError, match='unknown metric .fid.; valid metrics: fid50k_full'):
        metric_main.calc_metric('fid')

def test_report_metric_appends_lines(tmp_path, capsys):
    result = dnnlib.EasyDict(results=dict(fid50k_full=1.5), metric='fid50k_full', total_time=2.0, total_time_str='2s', num_gpus=1)
    line = metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'network-snapshot-000004.pkl'))
    metric_main.report_metric(result, run_dir=str(tmp_path))
    assert capsys.readouterr().out.splitlines()[0] == line
    with open(tmp_path / 'metric-fid50k_full.jsonl') as f:
        first, second = [json.loads(text) for text in f.read().splitlines()]
    assert first['snapshot_pkl'] == 'network-snapshot-000004.pkl' and second['snapshot_pkl'] is None
    assert first['results'] == {'fid50k_full': 1.5} and first['total_time'] == 2.0 and 'timestamp' in first
    metric_main.report_metric(result, run_dir=str(tmp_path / 'missing')) # No folder: printed only.
    assert not os.path.exists(tmp_path / 'missing')

def test_bad_input_is_a_one_line_error(setup, monkeypatch):
    base = ['--network', setup.snapshot, '--inception', setup.detector]
    assert_clean_error(run(base + ['--metrics', 'fid24_full,fid']), "unknown metric 'fid'", 'fid50k_full, kid50k_full')
    assert_clean_error(run(['--network', setup.root / 'missing.pkl', '--metrics', 'fid24_full']), 'missing.pkl: no such file')
    assert_clean_error(run(base + ['--metrics', 'fid24_full', '--data', setup.root / 'nowhere']), '--data', 'does not exist')
    assert_clean_error(run(base + ['--metrics', 'fid24_full', '--vgg16', 'fid-helper']), '--vgg16', 'only the Inception')
    assert_clean_error(run(['--network', setup.snapshot, '--metrics', 'fid24_full', '--inception', setup.root / 'none.pkl']),
        '--inception', 'none.pkl: no such file')
    with open(setup.root / 'no_g_ema.pkl', 'wb') as f:
        pickle.dump({'G': make_generator()}, f)
    assert_clean_error(run(['--network', setup.root / 'no_g_ema.pkl', '--data', setup.data]), "has no 'G_ema' network")

    write_images(setup.root / 'one', 1)
    assert_clean_error(run(base + ['--metrics', 'kid24_full', '--data', setup.root / 'one']),
        'kid24_full: KID needs at least 2 real images', 'has 1')

    # Offline with NVIDIA's detector: the URL, the cache folder and both ways to override.
    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, 'Temporary failure in name resolution'))
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    result = run(['--network', setup.snapshot, '--metrics', 'fid24_full'])
    assert_clean_error(result, metric_utils.INCEPTION_URL, str(setup.root / 'cache' / 'downloads'), 'CREPS_INCEPTION=', '--inception')

#----------------------------------------------------------------------------
