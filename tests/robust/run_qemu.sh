#!/bin/sh
# btvm_guest() (tests/guest/CMakeLists.txt) registers qemu.<name> with the
# run_qemu.sh of the calling directory: this one is tests/guest's.
exec "$(dirname "$0")/../guest/run_qemu.sh" "$@"
