#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (written by
# `sdverify autograder gradescope`; README "Instructors").  It installs the CPU build of torch,
# the sdverify wheel shipped in this zip with the versions CI tested, and bubblewrap where apt
# exists, then builds the offline model zoo, so that grading needs no network.
#
# AUTOGRADER_ROOT (default /autograder): where Gradescope unpacked this zip, as source/.
# SDVERIFY_PYTHON: an interpreter that already has this sdverify installed; then nothing is
#   installed and only the zoo is built (a local trial run, or an image you built yourself).
# The whole script is one { ...; } block, which bash parses before it runs any of it: what
# anything does to this file meanwhile (appending, rewriting the bytes after the grader's
# call) changes nothing, and the last command is `exit`, so nothing after the block is read.
{
    set -euo pipefail
    root=${AUTOGRADER_ROOT:-/autograder}
    source_dir=$root/source
    # shellcheck disable=SC1091
    . "$source_dir/autograder.env"
    export SDVERIFY_CACHE="$root/sdverify-cache"

    if [ -n "${SDVERIFY_PYTHON:-}" ]; then
        python=$SDVERIFY_PYTHON
    else
        if command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip bubblewrap
        fi
        python3 -m venv "$root/venv"
        python=$root/venv/bin/python
        "$python" -m pip install --quiet --upgrade pip
        # The CPU build: a plain `pip install torch` pulls several GB of CUDA libraries.
        "$python" -m pip install --quiet "torch==$SDVERIFY_TORCH" --index-url https://download.pytorch.org/whl/cpu
        wheel="$source_dir/$SDVERIFY_WHEEL[notebooks]"
        if ! "$python" -m pip install --quiet -c "$source_dir/constraints.txt" "$wheel"; then
            echo "setup.sh: constraints.txt does not resolve on $("$python" --version);" \
                "installing the newest releases sdverify accepts instead" >&2
            "$python" -m pip install --quiet "$wheel"
        fi
    fi

    "$python" -m sdverify zoo install --preset "$SDVERIFY_PRESET" --seed "${SDVERIFY_SEED:-0}"
    exit 0
}
