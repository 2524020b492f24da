"""The sandbox that runs generated programs: results, limits and refusals."""

from __future__ import annotations

from pathlib import Path

from scalelab.evals.sandbox import run_programs

# Reaches the import machinery without ``import`` (which the sandbox's builtins lack).
_ESCAPE = (
    "imp = [c for c in ().__class__.__base__.__subclasses__()"
    " if c.__name__ == 'BuiltinImporter'][0]\n"
)


def test_ok_and_failing_programs_are_told_apart() -> None:
    out = run_programs(["assert sorted([3, 1]) == [1, 3]", "assert 1 == 2", "1 / 0"])
    assert [o.status for o in out] == ["ok", "error", "error"]
    assert [o.detail for o in out] == ["", "AssertionError", "ZeroDivisionError"]


def test_filesystem_writes_and_reads_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    out = run_programs(
        [
            f"open({str(target)!r}, 'w').write('x')",
            _ESCAPE + f"imp.load_module('_io').open({str(target)!r}, 'w').write('x')",
            _ESCAPE + "imp.load_module('_io').open('/etc/hostname').read()",
            _ESCAPE + f"imp.load_module('posix').mkdir({str(tmp_path / 'd')!r})",
            _ESCAPE + "imp.load_module('posix').system('true')",
            # Catching the refusal does not turn it into a pass.
            _ESCAPE + "try:\n    imp.load_module('posix').listdir('/')\nexcept BaseException:\n"
            "    pass",
        ]
    )
    assert out[0].status == "error"  # no open among the builtins
    assert [o.status for o in out[1:]] == ["refused"] * 5
    assert [o.detail for o in out[1:]] == ["open", "open", "os.mkdir", "os.system", "os.listdir"]
    assert not target.exists() and not (tmp_path / "d").exists()


def test_network_and_imports_are_refused() -> None:
    get_import = _ESCAPE + (
        "sys = imp.load_module('sys')\nimport_ = sys.modules['builtins'].__import__\n"
    )
    out = run_programs(
        [
            get_import + "import_('socket').create_connection(('127.0.0.1', 9), timeout=1)",
            get_import + "import_('os').system('true')",
        ]
    )
    assert [(o.status, o.detail) for o in out] == [("refused", "import")] * 2


def test_frames_and_heap_are_out_of_reach() -> None:
    out = run_programs(
        [
            "try:\n    raise ValueError\nexcept ValueError as e:\n    e.__traceback__.tb_frame",
            _ESCAPE + "imp.load_module('gc').get_objects()",
            _ESCAPE + "imp.load_module('sys')._getframe(1)",
        ]
    )
    assert [o.status for o in out] == ["refused"] * 3


def test_time_and_memory_limits() -> None:
    out = run_programs(
        [
            "while True:\n    pass",  # a Python loop: the alarm ends it
            "sum(range(10**12))",  # stuck in C, deaf to the alarm: the parent kills the child
            "bytearray(10**10)",  # 10 GB: beyond the address-space limit
            "assert 2 + 2 == 4",  # the programs after a killed one still run
        ],
        seconds=0.5,
        grace=1.0,
        memory_bytes=256 << 20,
    )
    assert [o.status for o in out] == ["timeout", "killed", "error", "ok"]
    assert out[2].detail == "MemoryError"
