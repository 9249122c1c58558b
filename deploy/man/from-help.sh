#!/bin/sh
# Writes a man page from a program's --help, at build time, so the page says
# what the binary does:
#
#   from-help.sh PROGRAM NAME SECTION SUMMARY VERSION OUT [EXTRA]
#
# EXTRA, if given, is a roff file appended as is (FILES, SEE ALSO, ...).
set -eu
prog=$1 name=$2 section=$3 summary=$4 version=$5 out=$6 extra=${7:-}

help=$("$prog" --help)
tmp="$out.tmp"
{
    printf '.TH %s %s "" "qraft %s" "qraft"\n' \
        "$(echo "$name" | tr '[:lower:]' '[:upper:]')" "$section" "$version"
    printf '.SH NAME\n%s \\- %s\n' "$name" "$summary"
    printf '.SH SYNOPSIS AND OPTIONS\nAs printed by \\fB%s \\-\\-help\\fR:\n.PP\n.nf\n' "$name"
    # roff: a backslash is \e, a dash \-, and a line may not start with . or '
    printf '%s\n' "$help" | sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
    printf '.fi\n'
    if [ -n "$extra" ]; then
        cat "$extra"
    fi
} >"$tmp"
mv "$tmp" "$out"
