#!/usr/bin/env bash
# Check the include rules between the layers of src/ (README "Layout"):
#   src/common   plain C: only its own headers and the C library
#   src/core     core/ and common/ headers, and PostgreSQL's
#   src/api      api/, core/ and common/ headers, and PostgreSQL's
#   src/workers  workers/, core/ and common/ headers, and PostgreSQL's
# So dependencies point one way: workers -> core -> common, api -> core.
# Prints each violation as file:line and exits 1 if there is any.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
bad=0
for f in src/*/*.[ch]; do
    layer=${f#src/}; layer=${layer%%/*}
    while IFS=: read -r line inc; do
        inc=${inc#*\"}; inc=${inc%%\"*}
        case "$inc" in */*) target=${inc%%/*} ;; *) target= ;; esac
        ok=1
        case "$layer" in
        common)
            # a header beside it, nothing else (no backend header either)
            [ -n "$target" ] || [ ! -f "src/common/$inc" ] && ok=0 ;;
        core)
            case "$target" in api|workers) ok=0 ;; esac ;;
        api)
            case "$target" in workers) ok=0 ;; esac ;;
        workers)
            case "$target" in api) ok=0 ;; esac ;;
        *)
            echo "$f: not in a known layer (common, core, api, workers)"; bad=1; continue 2 ;;
        esac
        if [ "$ok" = 0 ]; then
            echo "$f:$line: $layer must not include \"$inc\""
            bad=1
        fi
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
done
for f in src/*.[ch]; do
    [ -e "$f" ] || continue
    echo "$f: every source file belongs in a layer folder (src/common, core, api, workers)"
    bad=1
done
if [ "$bad" = 0 ]; then
    echo "check-layers: $(ls src/*/*.[ch] | wc -l) files follow the layer rules"
fi
exit "$bad"
