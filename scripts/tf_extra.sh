#!/bin/sh
# Print the TensorFlow extra `make install` should use: "gpu" or "cpu".
#
#   TF=gpu | TF=cpu   explicit choice (the Makefile passes `make install TF=...` through);
#   TF=auto or unset  "gpu" when `nvidia-smi -L` runs and lists at least one GPU, else "cpu".
#
# Kept in its own script so the detection is testable with a fake nvidia-smi on PATH.
set -eu
choice=${TF:-auto}
case "$choice" in
    gpu|cpu)
        echo "$choice"
        ;;
    auto|"")
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
            echo gpu
        else
            echo cpu
        fi
        ;;
    *)
        echo "tf_extra.sh: TF must be gpu, cpu or auto, not '$choice'" >&2
        exit 2
        ;;
esac
