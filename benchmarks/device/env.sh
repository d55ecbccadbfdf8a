# Sourced at the start of every command on the lent GPU machine (run in the repository root there):
#
#   source benchmarks/device/env.sh && python3 benchmarks/reproduce_cifar10.py ... ; collect
#
# Installs the carried wheels (once per machine), puts pyro and the checkout on PYTHONPATH, names the GPU,
# and defines
#   posterior_env  puts geomstats, arviz and numpy 2.3 (.whl-diagnose) in front, for `vprob diagnose` with
#                  its posterior section only: the training runs keep the machine's own numpy;
#   collect        packs what the GPU runs wrote (records, run folders without their checkpoints, benchmark
#                  outputs) into one archive under $OUT, the folder that comes back.
set -o pipefail
posterior_env() {
    [ -e /tmp/site-diagnose/.installed ] || { echo "carry .whl-diagnose (benchmarks/device/prepare.sh)"; return 1; }
    export PYTHONPATH="/tmp/site-diagnose:$PYTHONPATH"
}

collect() {
    tar czf "$OUT/results-$(date +%H%M%S).tgz" --exclude='*.pt' \
        benchmarks/results/reproduce benchmarks/results/gpu runs/reproduce 2>/dev/null
    ls -la "$OUT"
}

install_wheels() {  # install_wheels FOLDER TARGET
    if [ -d "$1" ] && [ ! -e "$2/.installed" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" \
            "$1"/*.whl && touch "$2/.installed"
    fi
}
install_wheels .whl /tmp/site || return 1
install_wheels .whl-diagnose /tmp/site-diagnose || return 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
mkdir -p benchmarks/results/gpu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)" || return 1
