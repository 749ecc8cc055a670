"""Splice the benchmark's markdown tables (results/**/*.md) into README.md between their markers.

    <!-- results:forget -->  ...  <!-- /results:forget -->   <-  results/forget.md
    <!-- results:personal-8/bench-baselines -->  ...          <-  results/personal-8/bench-baselines.md
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    readme = (ROOT / "README.md").read_text()
    for table in sorted((ROOT / "results").rglob("*.md")):
        relative = table.relative_to(ROOT / "results")
        name = re.escape(relative.with_suffix("").as_posix())
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.DOTALL)
        readme, count = pattern.subn(lambda m: m.group(1) + table.read_text() + m.group(2), readme)
        print(f"{relative}: {'updated' if count else 'no markers in README'}", file=sys.stderr)
    (ROOT / "README.md").write_text(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
