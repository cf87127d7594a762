#!/bin/sh
# (Re)creates fuzz/seeds/* from the repository's test data: see seed.py.
exec python3 "$(dirname "$0")/seed.py" "$@"
