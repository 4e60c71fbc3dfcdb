"""The compiled training steps (trajbench.run.trainer): the batch sharded over 1 or 4 devices gives one loss
curve."""

from run_helpers import assert_same_metrics, cli_train, host_devices_env, metrics, on_every_core


def test_one_and_four_devices_give_the_same_loss_curve(tmp_path):
    runs = {}
    for devices in (1, 4):
        with on_every_core():
            process = cli_train(tmp_path / f"d{devices}", 20, env=host_devices_env(devices))
        assert process.wait(timeout=300) == 0, process.stderr.read()
        runs[devices] = metrics(tmp_path / f"d{devices}")
    assert_same_metrics(runs[4], runs[1], rel=1e-4)
