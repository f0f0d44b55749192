#!/usr/bin/env bash
# Prints the path of a python3.13 interpreter (the Lambda runtime's version), else python3.
for candidate in \
  "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 \
  /usr/local/bin/python3.13 /usr/bin/python3.13; do
  if [ -x "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then echo "$candidate"; exit 0; fi
done
if command -v python3.13 >/dev/null 2>&1 && python3.13 -c 'import sys' 2>/dev/null; then command -v python3.13; exit 0; fi
command -v python3
