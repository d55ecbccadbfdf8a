#!/usr/bin/env bash
# Mutation testing of one module against its own test files (issue #19), with mutmut 3 (pip install mutmut).
#
#   bash benchmarks/mutation.sh MODULE TEST_FILE... [--only GLOB...]
#   bash benchmarks/mutation.sh vprob/optim.py tests/test_optim.py
#   bash benchmarks/mutation.sh vprob/evaluate.py tests/test_evaluate.py --only 'vprob.evaluate.x_knn*'
#
# Works on a copy of the working tree (tracked and untracked, not ignored files) in
# ${MUTATION_DIR:-/tmp/vprob-mutation}/<module>, so the checkout never gets a mutants/ folder and other work in
# the tree is not disturbed; the copy's [tool.mutmut] (pyproject.toml) is narrowed to MODULE and the given
# test files. --only passes mutant-name globs to `mutmut run` (names look like vprob.optim.x_warmup_cosine__mutmut_3;
# a function `f` of the module is 'vprob.optim.x_f__mutmut_*', a method 'vprob.optim.xǁLARSǁstep__mutmut_*').
# Runs under nice -n 15 with one worker and one thread (MUTATION_JOBS to change). Ends with a summary line
# (killed / survived / other per module) and the diff of every surviving mutant. Not run in CI: slow on 2 cores.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
module=$1
shift
tests=()
only=()
while [[ $# -gt 0 ]]; do
    if [[ $1 == --only ]]; then
        shift
        only=("$@")
        break
    fi
    tests+=("$1")
    shift
done
[[ ${#tests[@]} -gt 0 ]] || { echo "give at least one test file" >&2; exit 2; }

root=$(git rev-parse --show-toplevel)
cd "$root"
[[ -f $module ]] || { echo "no such module: $module" >&2; exit 2; }
for t in "${tests[@]}"; do [[ -f $t ]] || { echo "no such test file: $t" >&2; exit 2; }; done
command -v mutmut >/dev/null || { echo "mutmut not found: pip install 'mutmut>=3.8'" >&2; exit 2; }

slug=$(echo "$module" | tr '/.' '__')
work=${MUTATION_DIR:-/tmp/vprob-mutation}/$slug
rm -rf "$work"
mkdir -p "$work"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e $f ]] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$work"

# Narrow the copy's [tool.mutmut] to this module and these tests (the checkout's file is not touched).
python - "$work/pyproject.toml" "$module" "${tests[@]}" <<'PY'
import json, re, sys, tomllib
path, module, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(path).read()
cfg = tomllib.loads(text)["tool"]["mutmut"]
cfg["only_mutate"] = [module]
cfg["pytest_add_cli_args_test_selection"] = tests
# Some tests read recorded results under benchmarks/; mutmut runs the tests in its mutants/ copy.
cfg["also_copy"] = [*cfg.get("also_copy", []), "benchmarks/"]
section = "[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items())
text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", lambda _: section + "\n", text)
open(path, "w").write(text)
PY

cd "$work"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
nice -n 15 mutmut run --max-children "${MUTATION_JOBS:-1}" "${only[@]}" | tail -n 5
echo "wall time: $(( $(date +%s) - start )) s  (work dir: $work)"
mutmut results --all true > results.txt
python - "${only[@]}" <<'PY'
import collections, fnmatch, sys
globs = sys.argv[1:]
rows = [line.strip().rsplit(": ", 1) for line in open("results.txt") if ": " in line]
# With --only, count the selected mutants; "not checked" ones were not run.
rows = [(n, s) for n, s in rows if not globs or any(fnmatch.fnmatch(n, g) for g in globs)]
counts = collections.Counter(s for _, s in rows if s != "not checked")
total = sum(counts.values())
survived = counts.get("survived", 0)
print(f"mutants: {total}  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
if total:
    print(f"survival rate: {survived}/{total} = {100 * survived / total:.1f} %")
with open("survivors.txt", "w") as out:
    out.writelines(f"{n}\n" for n, s in rows if s in ("survived", "no tests", "timeout", "suspicious"))
PY
while read -r name; do
    mutmut show "$name"
done < survivors.txt
