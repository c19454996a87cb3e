"""The TensorBoard writer: event files tensorboardX writes, without importing torch."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib.util, pathlib, struct, sys
    from janus import metric_writer

    logdir = pathlib.Path(sys.argv[1])
    w = metric_writer.TensorBoardWriter(logdir)
    w.write_scalars(3, {"loss": 0.25})
    w.close()
    print("torch imported:", "torch" in sys.modules)
    from tensorboardX.proto import event_pb2

    (events,) = logdir.glob("events.out.tfevents.*")
    data, values = events.read_bytes(), []
    while data:  # TFRecord framing: length, its crc, the event, its crc
        (n,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12 : 12 + n])
        values += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
        data = data[16 + n :]
    print("scalars:", values)
    if importlib.util.find_spec("torch"):  # a later torch import still works
        import torch

        print("torch afterwards:", torch.zeros(1).shape == (1,))
    """
)


def test_event_files_are_written_without_importing_torch(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch imported: False" in out.stdout
    assert "scalars: [(3, 'loss', 0.25)]" in out.stdout
    if "torch afterwards:" in out.stdout:  # where torch is installed (README step 2)
        assert "torch afterwards: True" in out.stdout
