"""promtext.py - a strict reader of the Prometheus text exposition format
(0.0.4), for tests that check what GET /metrics really says.

parse(text) returns {family name: Family}; it raises ValueError on anything
a Prometheus server would refuse or a dtx metric must not do:
  - a sample that belongs to no family announced with both # HELP and # TYPE
    before it (a histogram X owns X_bucket, X_sum and X_count);
  - a family announced twice, or whose samples are not all in one group;
  - a malformed name, label or value; the same series twice;
  - a histogram series whose buckets are not ascending in le, not
    cumulative, do not end with le="+Inf", or whose +Inf bucket is not its
    _count, or without _sum or _count;
  - a label value that looks like a global transaction id or a gid
    (one series per transaction would grow without bound).
"""

import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?$")
# node-epoch-seq (gid.c), or a prepared transaction's gid dtx:<gtid>:<shard>
GTID_LIKE = re.compile(r"(^|:)[A-Za-z0-9_-]+-\d+-\d+($|:)|^dtx:")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []  # (sample name, {label: value}, float)

    def owns(self, sample):
        if self.type == "histogram":
            return sample in (self.name + "_bucket", self.name + "_sum", self.name + "_count")
        if self.type == "summary":
            return sample in (self.name, self.name + "_sum", self.name + "_count")
        return sample == self.name

    def value(self, sample=None, **labels):
        """The value of the one series named sample (default: the family's) with exactly labels."""
        want = sample or self.name
        for s, l, v in self.samples:
            if s == want and l == labels:
                return v
        raise KeyError("%s%s" % (want, labels))

    def series(self, sample=None):
        want = sample or self.name
        return [(l, v) for s, l, v in self.samples if s == want]

    def total(self, sample=None):
        return sum(v for _, v in self.series(sample))

    def histograms(self):
        """{frozenset of labels without le: {"buckets": [(le, n)], "sum": x, "count": n}}."""
        out = {}
        for s, l, v in self.samples:
            key = frozenset((k, x) for k, x in l.items() if k != "le")
            h = out.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if s.endswith("_bucket"):
                h["buckets"].append((parse_value(l["le"]), v))
            elif s.endswith("_sum"):
                h["sum"] = v
            else:
                h["count"] = v
        return out


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)


def unescape(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            if i + 1 >= len(s) or s[i + 1] not in "\\\"n":
                raise ValueError("bad escape in label value %r" % s)
            out.append("\n" if s[i + 1] == "n" else s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_labels(text, line):
    labels = {}
    rest = text[1:-1]
    while rest:
        m = re.match(r'\s*([^=\s]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', rest)
        if not m:
            raise ValueError("malformed labels: %r" % line)
        name, value = m.group(1), unescape(m.group(2))
        if not LABEL.match(name) or name.startswith("__"):
            raise ValueError("bad label name %r: %r" % (name, line))
        if name in labels:
            raise ValueError("label %s twice: %r" % (name, line))
        if GTID_LIKE.search(value):
            raise ValueError("a label value looks like a transaction id: %r" % line)
        labels[name] = value
        rest = rest[m.end():]
    return labels


def check_histogram(fam):
    for key, h in fam.histograms().items():
        where = "%s%s" % (fam.name, dict(key))
        if h["sum"] is None or h["count"] is None:
            raise ValueError("%s: no _sum or _count" % where)
        les = [le for le, _ in h["buckets"]]
        if not les or les[-1] != math.inf:
            raise ValueError("%s: buckets do not end with le=\"+Inf\"" % where)
        if les != sorted(les) or len(set(les)) != len(les):
            raise ValueError("%s: buckets not in ascending le order: %s" % (where, les))
        counts = [n for _, n in h["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise ValueError("%s: buckets not cumulative: %s" % (where, counts))
        if counts[-1] != h["count"]:
            raise ValueError("%s: +Inf bucket %s != _count %s" % (where, counts[-1], h["count"]))
        if not math.isfinite(h["sum"]) or (h["count"] == 0 and h["sum"] != 0):
            raise ValueError("%s: implausible _sum %s" % (where, h["sum"]))


def parse(text):
    fams, order, seen, current = {}, [], set(), None
    if text and not text.endswith("\n"):
        raise ValueError("the text does not end with a newline")
    for line in text.split("\n")[:-1] if text else []:
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                continue  # a comment
            name = parts[2]
            if not NAME.match(name):
                raise ValueError("bad metric name: %r" % line)
            fam = fams.get(name)
            if fam is None:
                fam = fams[name] = Family(name)
                order.append(name)
            elif fam.samples:
                raise ValueError("%s announced again after its samples: %r" % (name, line))
            if parts[1] == "HELP":
                if fam.help is not None:
                    raise ValueError("second # HELP for %s" % name)
                fam.help = parts[3] if len(parts) > 3 else ""
                if not fam.help.strip():
                    raise ValueError("empty # HELP for %s" % name)
            else:
                if fam.type is not None:
                    raise ValueError("second # TYPE for %s" % name)
                if len(parts) != 4 or parts[3] not in TYPES:
                    raise ValueError("bad # TYPE line: %r" % line)
                fam.type = parts[3]
            current = fam
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError("malformed sample line: %r" % line)
        name, labels = m.group(1), parse_labels(m.group(2), line) if m.group(2) else {}
        value = parse_value(m.group(3))
        if current is None or not current.owns(name):
            raise ValueError("sample outside its family's group (or of no family): %r" % line)
        if current.help is None or current.type is None:
            raise ValueError("family %s lacks # HELP or # TYPE: %r" % (current.name, line))
        if ("le" in labels) != (current.type == "histogram" and name.endswith("_bucket")):
            raise ValueError("le label where it does not belong (or missing): %r" % line)
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ValueError("the same series twice: %r" % line)
        seen.add(key)
        if current.type == "counter" and not value >= 0:
            raise ValueError("a counter below zero: %r" % line)
        current.samples.append((name, labels, value))
    for fam in fams.values():
        if fam.help is None or fam.type is None:
            raise ValueError("family %s lacks # HELP or # TYPE" % fam.name)
        if fam.type == "histogram":
            check_histogram(fam)
    return fams
