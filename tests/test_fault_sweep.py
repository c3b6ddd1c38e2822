"""The fault contract over generated cases (tests/fault_sweep.py): a seeded sample here, every case in
``python benchmarks/fault_sweep.py``; and the cases the whole sweep found broken, each fixed since."""

import click
import fault_sweep
import pytest

from keras_ucaps.cli import main

SAMPLE, SEED, LIMIT_S = 20, 2026, 10.0

# Broken when the sweep first ran (tracebacks, leftovers, two-line errors); each must keep the contract now.
FOUND = [
    ("export", "--base", "a full disk"),  # ResourceExhaustedError traceback; the version's folders left
    ("export", "--tile", "huge"),  # ValueError traceback from the served function
    ("fit", "--out", "a full disk"),  # exit 2, but the run folder (config, logs, lock) left behind
    ("fit", "--batch-size", "huge"),  # ValueError traceback from UpSampling3D
    ("fit", "--folds", "huge"),  # exit 2, but run/fold_0 left behind
    ("fit", "--seed", "-1"),  # ValueError traceback: Keras seeds are 0 to 2**32 - 1
    ("pick", "label_maps[0]", "missing"),  # named the classes.json beside it, not the missing map
    ("predict", "--out", "a dangling link"),  # FileExistsError traceback
    ("predict", "--out", "a full disk"),  # the process died of SIGBUS (a sparse memory map on a full disk)
    ("patches", "--radius-scale", "huge"),  # a RuntimeWarning line before the error
    ("simulate", "--out", "a full disk"),  # exit 2, but sim/classes.json left behind
    ("simulate", "--voxel-size", "huge"),  # ValueError traceback: templates shrunk to nothing
    ("fit", "--epochs", "0"),  # click's usage error on four lines
    ("patches", "--background-fraction", "huge"),  # 1e30 background patches per particle: ran until killed
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return fault_sweep.make_workspace(tmp_path_factory.mktemp("fault-sweep") / "ws")


def test_every_command_has_a_working_call_and_every_path_parameter_is_swept_or_excused():
    assert sorted(fault_sweep.BASE) == sorted(main.commands)
    for name, command in main.commands.items():
        swept = fault_sweep._path_tokens(name)
        for param in command.params:
            if not isinstance(param.type, click.Path):
                continue
            key = param.opts[0] if isinstance(param, click.Option) else param.name
            assert key in swept or any(k.startswith(f"{key}[") for k in swept) or (name, key) in \
                fault_sweep.NOT_SWEPT, f"{name} {key}: neither swept nor excused"
    cases = fault_sweep.cases()
    assert len(cases) >= 500 and len({c.name for c in cases}) == len(cases)
    assert {(c.command, c.target, c.fault) for c in cases} >= set(FOUND)


@pytest.mark.parametrize("command, target, fault", FOUND, ids=[" ".join(f) for f in FOUND])
def test_what_the_sweep_found_keeps_the_contract(workspace, tmp_path, command, target, fault):
    with fault_sweep.full_disk() as disk:
        if fault == "a full disk" and disk is None:
            pytest.skip("no tmpfs can be mounted here")
        outcome = fault_sweep.run_case(fault_sweep.Case(command, target, fault), workspace, tmp_path, 60.0, disk)
    assert outcome.verdict.startswith("ok"), (outcome.verdict, outcome.detail)  # a time limit is no answer here


def test_a_seeded_sample_of_the_sweep_keeps_the_contract(workspace, tmp_path):
    before = fault_sweep.listing(workspace)
    with fault_sweep.full_disk() as disk:
        chosen = fault_sweep.sample(SAMPLE, SEED, full_disk=disk is not None)
        # a case means something only if the call it changes works
        for name in sorted({c.command for c in chosen}):
            works = fault_sweep.run_case(fault_sweep.Case(name, "", "unchanged"), workspace, tmp_path / name, 120.0)
            assert works.verdict == "ok (exit 0)", (name, works.verdict, works.detail)
        outcomes = [fault_sweep.run_case(case, workspace, tmp_path / str(i), LIMIT_S, disk)
                    for i, case in enumerate(chosen)]
    failed = [f"{o.case.name}: {o.verdict}: {o.detail}" for o in outcomes if o.failed]
    assert not failed, "\n".join(failed)
    assert fault_sweep.listing(workspace) == before  # inputs are never changed


@pytest.mark.parametrize("fault", ["truncated", "of the wrong kind", "another command's output"])
def test_a_faulted_input_given_twice_leaves_the_workspace_as_it_was(workspace, tmp_path, fault):
    """patches takes two --tomogram files: the second faulted copy was written through the link the first one
    made to its sibling, into the workspace itself (every later case then read a broken tomogram)."""
    before = fault_sweep.listing(workspace)
    outcome = fault_sweep.run_case(fault_sweep.Case("patches", "--tomogram", fault), workspace, tmp_path, LIMIT_S)
    assert not outcome.failed, (outcome.verdict, outcome.detail)
    assert fault_sweep.listing(workspace) == before


def test_a_copick_write_killed_part_way_leaves_the_old_project_or_the_new_one(workspace, tmp_path):
    outcome = fault_sweep.run_kill("convert --to copick", workspace, tmp_path, 0.5)
    assert not outcome.failed, (outcome.verdict, outcome.detail)


def test_a_diverging_fit_stops_at_the_first_loss_that_is_not_a_number():
    """fit --lr 1e30 (now refused by its range) trained to NaN weights and exited 0: a run that diverges stops in
    one line naming --lr."""
    from keras_ucaps.errors import InputError
    from keras_ucaps.training.callbacks import StopOnDivergence

    stop = StopOnDivergence()
    stop.on_epoch_begin(2)
    stop.on_train_batch_end(0, {"loss": 0.7})
    with pytest.raises(InputError, match="--lr: training diverged: the loss is nan at step 4 of epoch 3"):
        stop.on_train_batch_end(3, {"loss": float("nan")})


def test_outputs_written_as_a_group_appear_together_or_not_at_all(tmp_path):
    """evaluate --report R --json J on a full disk wrote R, then failed on J, and left R behind."""
    from keras_ucaps.errors import InputError
    from keras_ucaps.io.atomic import atomic_group, atomic_path

    (tmp_path / "b.json").write_text("old\n")
    with pytest.raises(InputError, match="b.json: cannot be written"):
        with atomic_group():
            with atomic_path(tmp_path / "a.png") as tmp:
                tmp.write_text("report")
            with atomic_path(tmp_path / "b.json") as tmp:
                raise OSError(28, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"] and (tmp_path / "b.json").read_text() == "old\n"
    with atomic_group():
        for name in ("a.png", "b.json"):
            with atomic_path(tmp_path / name) as tmp:
                tmp.write_text(name)
        assert not (tmp_path / "a.png").exists()  # not before the group ends
    assert (tmp_path / "a.png").read_text() == "a.png" and (tmp_path / "b.json").read_text() == "b.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.json"]
