"""The Prometheus text format (version 0.0.4) as /metrics writes it: a strict
parser for the tests (every comment is HELP or TYPE, every sample's family
was TYPEd before it, a histogram's samples are its _bucket, _sum and _count)
and sums over labels."""

import re

# One sample line of the text format: name{labels} value.
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? '
    r'(-?[0-9.eE+]+|NaN|[+-]Inf)$'
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
TYPES = ("counter", "gauge", "histogram")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def family_of(name, typed):
    """The family a sample name belongs to (a histogram's name without its
    suffix), or None when no TYPE line named it."""
    if name in typed:
        return name
    for suffix in HIST_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and typed.get(base) == "histogram":
            return base
    return None


def parse(text, types=None):
    """{(name, labels-tuple): value}. types, a dict when given, receives
    {family: type}."""
    samples = {}
    typed = {} if types is None else types
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if parts[1] not in ("HELP", "TYPE") or len(parts) < 4:
                raise AssertionError(f"bad comment line: {line!r}")
            if parts[1] == "TYPE":
                if parts[3] not in TYPES:
                    raise AssertionError(f"bad type: {line!r}")
                typed[parts[2]] = parts[3]
            continue
        m = SAMPLE.match(line)
        if m is None:
            raise AssertionError(f"not a sample line: {line!r}")
        name = m.group(1)
        if family_of(name, typed) is None:
            raise AssertionError(f"{name} has no TYPE line before it")
        labels = tuple(LABEL.findall(m.group(3) or ""))
        if (name, labels) in samples:
            raise AssertionError(f"sample repeated: {line!r}")
        samples[(name, labels)] = float(m.group(5))
    return samples


def total(samples, name, **labels):
    """The sum of name's samples whose labels include labels."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items()
               if n == name and want <= set(ls))
