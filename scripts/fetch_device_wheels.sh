#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the Python 3.12 manylinux x86-64 wheels that the GPU check
# machine lacks: the notebook stack (papermill, nbclient, nbconvert, ipykernel, ...), pooch,
# platformdirs, ipywidgets, each with its missing dependencies named explicitly, one version each.
# The machine already has numpy, pandas, scipy, scikit-learn, matplotlib, seaborn, pyarrow, tqdm,
# pyyaml, pytest, jinja2, markupsafe, pygments, requests, click, attrs, psutil, aiohttp, torch, PyG.
#
#   scripts/fetch_device_wheels.sh            # 46 wheels, 17 MiB
#   WITH_RAY=1 scripts/fetch_device_wheels.sh # adds ray (ray 2.60.0 alone is 76 MiB: too big to
#                                             # carry with the 64 MiB working-tree limit)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEST=${DEST:-.whl}
mkdir -p "$DEST"
git check-ignore -q "$DEST/x.whl" || echo "warning: $DEST is not git-ignored (add /.whl/ to .gitignore)" >&2

PKGS=(
  papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 nbconvert==7.17.2 ipykernel==7.4.0
  jupyter_client==8.10.0 jupyter_core==5.9.1 ipython==9.18.1 pooch==1.9.0 platformdirs==4.14.9
  ipywidgets==8.1.9 widgetsnbextension==4.0.16 jupyterlab_widgets==3.0.17 traitlets==5.16.1
  fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
  rpds-py==2026.9.1 pyzmq==27.3.0 tornado==6.6.1 comm==0.2.3 debugpy==1.8.22 matplotlib-inline==0.2.2
  jedi==0.20.1 parso==0.8.7 prompt-toolkit==3.0.53 wcwidth==0.9.4 pexpect==4.9.0 ptyprocess==0.7.0
  stack-data==0.6.3 asttokens==3.0.2 executing==2.3.0 pure-eval==0.2.4 ipython-pygments-lexers==1.1.1
  entrypoints==0.4.2 tenacity==9.2.1 bleach==6.4.0 tinycss2==1.5.1 webencodings==0.6.1
  defusedxml==0.7.1 mistune==3.4.0 pandocfilters==1.5.1 beautifulsoup4==4.15.0 soupsieve==4.1.3
  jupyterlab-pygments==0.3.0
)
if [[ "${WITH_RAY:-0}" == 1 ]]; then
  PKGS+=(ray==2.60.0)
fi
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${PKGS[@]}"
# one version of each: a second one stops the install on the device
dups=$(ls "$DEST"/*.whl | xargs -n1 basename | sed 's/-[0-9].*//' | tr '[:upper:]-' '[:lower:]_' | sort | uniq -d)
if [[ -n "$dups" ]]; then echo "error: several versions in $DEST of: $dups" >&2; exit 1; fi
size=$(du -sm "$DEST" | cut -f1)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, ${size} MiB in $DEST"
if (( size > 40 )); then echo "error: $DEST is ${size} MiB; the device working tree limit is 64 MiB" >&2; exit 1; fi
