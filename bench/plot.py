"""Dependency-free SVG plot of submission latency (p50/p99/p99.9, log scale) against offered load, Wharf and baseline (a)."""

import html
import math

W, H = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 40, 60
COLORS = {"wharf": "#1f77b4", "baseline": "#d62728"}
DASH = {"p50_ms": "", "p99_ms": "6,3", "p99_9_ms": "2,3"}
LABEL = {"p50_ms": "p50", "p99_ms": "p99", "p99_9_ms": "p99.9"}


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000):
        if v <= step * 5:
            return step * 5
    return v


def write_svg(result: dict, path: str) -> None:
    size, entry = next(((s, e) for s, e in result.get("sizes", {}).items() if e.get("sweep")), (None, None))
    series = []
    if entry:
        for target in ("wharf", "baseline"):
            points = sorted(((f["offered_rps"], f) for f in entry["sweep"].get(target, [])), key=lambda p: p[0])
            sat = entry.get(f"{target}_saturation")
            series.append((target, points, (sat["throughput_rps"], sat) if sat else None))
    allpts = [p for _, pts, sat in series for p in pts + ([sat] if sat else [])]
    xs = [x for x, _ in allpts]
    ys = [f[k] for _, f in allpts for k in DASH if f.get(k)]
    xmax = _nice_max(max(xs, default=1) * 1.05)
    ylo = 10 ** math.floor(math.log10(max(min(ys, default=0.1), 0.01)))
    yhi = 10 ** math.ceil(math.log10(max(max(ys, default=1), ylo * 10)))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x):
        return LEFT + pw * x / xmax

    def py(y):
        y = min(max(y, ylo), yhi)
        return TOP + ph * (1 - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{LEFT}" y="22" font-size="14">Submission latency vs offered load, {html.escape(str(size))} B documents '
           f'({html.escape(result.get("date", ""))}, {result.get("machine", {}).get("cores", "?")} cores)</text>']
    y = ylo
    while y <= yhi * 1.001:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y *= 10
    for i in range(6):
        x = xmax * i / 5
        out.append(f'<line y1="{TOP}" y2="{TOP + ph}" x1="{px(x):.1f}" x2="{px(x):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{px(x):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{x:g}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 18}" text-anchor="middle">offered load (requests/s, open loop); squares: saturation (50 connections, closed loop), achieved rate</text>')
    out.append(f'<text x="18" y="{TOP + ph / 2}" transform="rotate(-90 18 {TOP + ph / 2})" text-anchor="middle">latency (ms, log scale)</text>')
    ly = TOP + 10
    for target, pts, sat in series:
        for key, dash in DASH.items():
            coords = [(px(x), py(f[key])) for x, f in pts if f.get(key) is not None]
            if sat and sat[1].get(key) is not None:
                sx, sy = px(sat[0]), py(sat[1][key])
                out.append(f'<rect x="{sx - 4:.1f}" y="{sy - 4:.1f}" width="8" height="8" fill="none" stroke="{COLORS[target]}" stroke-width="1.5"/>')
            if not coords:
                continue
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{d}" fill="none" stroke="{COLORS[target]}" stroke-width="2" stroke-dasharray="{dash}"/>')
            for x, y in coords:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[target]}"/>')
            lx = LEFT + pw + 15
            out.append(f'<line x1="{lx}" x2="{lx + 30}" y1="{ly}" y2="{ly}" stroke="{COLORS[target]}" stroke-width="2" stroke-dasharray="{dash}"/>')
            name = "wharf web" if target == "wharf" else "baseline (a)"
            out.append(f'<text x="{lx + 36}" y="{ly + 4}">{name} {LABEL[key]}</text>')
            ly += 18
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
