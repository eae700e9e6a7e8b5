"""Output files that are not regular files: a device, a FIFO and a symbolic link are written
through, never replaced. As root, `rif attribute --json /dev/null --force` had replaced
/dev/null itself with a regular file (atomic writes rename a temporary onto the target)."""

import os
import stat
import threading

import pytest

from rif_native import _output


def _fifo_reader(path, got):
    with open(path, "rb") as f:
        got.append(f.read())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=_fifo_reader, args=(fifo, got))
    reader.start()
    _output.write_text(fifo, "hello\n")
    reader.join(10)
    assert got == [b"hello\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]  # no temporary left
    outputs = _output.Outputs(force=False)
    assert outputs.file(fifo, option="--json") == fifo  # not "already exists; add --force"
    outputs.discard()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mknod needs root")
def test_a_device_stays_a_device(tmp_path):
    """A node of /dev/null's device made here (not /dev/null itself: a regression would replace
    the machine's own)."""
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.stat(os.devnull).st_rdev)
    _output.write_text(null, "x" * 1000)
    assert _output.Outputs(force=True).file(null, option="--json") == null
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_link_is_followed_and_kept(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    _output.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_dev_stdout_on_a_pipe_is_written(tmp_path):
    """/dev/stdout resolves to a pipe under /proc that cannot be opened by that name: the name
    as given is written (it failed after all the work: "No such file or directory")."""
    import subprocess
    import sys

    code = "from rif_native import _output; _output.write_text('/dev/stdout', 'through\\n')"
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"through\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_an_error_on_a_special_files_temporary_names_the_target(tmp_path):
    """A special file's temporary lives in the system's temporary folder: an error naming it
    (a full disk there, say) is told as the target's, whose name the user gave."""
    import errno

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as info:
        with _output.atomic_target(fifo) as tmp:
            assert tmp.parent != tmp_path
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert info.value.filename == str(fifo) and info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]
