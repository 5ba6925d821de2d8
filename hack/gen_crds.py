"""Write, or check, the CRDs generated from the API models (operator/embedops/api).

CRDs are generated rather than written by hand so that the API server and the operator can never
disagree about what a valid spec is; `--check` is what CI and tests/api/test_crd.py run to catch a
model change committed without its regenerated CRDs.

    python hack/gen_crds.py                      # write crds/ and the chart's copy
    python hack/gen_crds.py --check              # exit 1 naming each stale file
    python hack/gen_crds.py --out some/folder    # the same files elsewhere (only there)

The chart (charts/embedops) templates its copy in files/crds/ behind `crds.enabled`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedops.api import crd

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = (ROOT / "crds", ROOT / "charts" / "embedops" / "files" / "crds")


def _ours(path: Path) -> bool:
    """Only files carrying our header are ever reported as leftovers or deleted."""
    with path.open(encoding="utf-8") as f:
        return f.readline() == crd.HEADER


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """Why each file in `out` differs from what the models generate; empty when up to date."""
    problems = []
    for name, text in files.items():
        path = out / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the models")
    problems.extend(
        f"{path}: no longer generated" for path in sorted(out.glob("*.yaml")) if path.name not in files and _ours(path)
    )
    return problems


def write(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in out.glob("*.yaml"):
        if path.name not in files and _ours(path):
            path.unlink()
    for name, text in files.items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder of the CRD files (default: crds/ and the chart's files/crds/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the folder is stale")
    args = parser.parse_args(argv)
    files = crd.generate()
    outs = [args.out] if args.out else list(OUTPUTS)
    if args.check:
        problems = [problem for out in outs for problem in stale(out, files)]
        for problem in problems:
            print(f"stale: {problem}", file=sys.stderr)
        if problems:
            print("regenerate with: python hack/gen_crds.py", file=sys.stderr)
        return 1 if problems else 0
    for out in outs:
        write(out, files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
