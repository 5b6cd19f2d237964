#!/usr/bin/env python3
"""End-to-end acceptance of a faster algorithm or lower precision: the same training, several seeds,
on several synthetic sets, per arm (a set of config overrides), and the table that judges it: each
arm's mean and spread of rank-1 and mAP, and the mean training loss per epoch side by side.

    python3 Cluster/dev/algorithm_acceptance.py --work /tmp/acceptance \\
        --arm gemm=model.conv_algorithm=gemm --arm winograd4=model.conv_algorithm=winograd4

Runs already finished in --work are read, not repeated (the script can be stopped and run again).
The rule it reports (docs/performance.md): an arm passes when, on every set, its mean rank-1 and
mAP are within the reference arm's (the first one's) seed-to-seed range widened by one standard
deviation of the reference, i.e. [min - sd, max + sd].
"""
import argparse, json, os, statistics, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--bin", default=os.path.join(root, ".build", "release", "reid-dist"))
p.add_argument("--config", default=os.path.join(root, "Configs", "debug.yaml"))
p.add_argument("--work", required=True, help="folder for the synthetic sets and the runs")
p.add_argument("--arm", action="append", required=True, help="NAME=KEY=VALUE[,KEY=VALUE...]; the first is the reference")
p.add_argument("--seeds", default="1,2,3")
p.add_argument("--sets", default="market:0,msmt17:7", help="LAYOUT:SYNTH_SEED,...")
p.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
a = p.parse_args()

arms = []
for spec in a.arm:
    name, _, sets = spec.partition("=")
    arms.append((name, [s for s in sets.split(",") if s]))
seeds = [int(s) for s in a.seeds.split(",")]
datasets = [(s.split(":")[0], int(s.split(":")[1])) for s in a.sets.split(",")]
os.makedirs(a.work, exist_ok=True)


def records(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


results = {}
for layout, synth_seed in datasets:
    data = os.path.join(a.work, f"synth-{layout}-{synth_seed}")
    if not os.path.isdir(data):
        subprocess.run([a.bin, "synth", "--layout", layout, "--out", data, "--seed", str(synth_seed)], check=True,
                       stdout=subprocess.DEVNULL)
    for name, sets in arms:
        for seed in seeds:
            run = os.path.join(a.work, "runs", f"{layout}-{synth_seed}", name, f"seed-{seed}")
            if not any(r.get("kind") == "eval" and r.get("epoch") == max((x.get("epoch", 0) for x in records(run)), default=-1)
                       for r in records(run)) or not os.path.exists(os.path.join(run, "report.html")):
                subprocess.run(["rm", "-rf", run])
                overrides = [f"data.root={data}", f"data.layout={layout}", f"train.seed={seed}", f"train.run_dir={run}"] + a.set + sets
                cmd = [a.bin, "train", "--config", a.config] + sum((["--set", s] for s in overrides), [])
                print(f"{layout}/{name}/seed {seed}: {' '.join(sets)}", file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            rs = records(run)
            last = [r for r in rs if r.get("kind") == "eval"][-1]
            epochs = sorted({r["epoch"] for r in rs if r.get("kind") == "train"})
            loss = [statistics.mean(r["step_loss"] for r in rs if r.get("kind") == "train" and r["epoch"] == e) for e in epochs]
            ips = [r["images_per_second"] for r in rs if r.get("kind") == "train"]
            results[(layout, synth_seed, name, seed)] = (last["rank1"] * 100, last["mAP"] * 100, loss, statistics.median(ips))


def sd(v):
    return statistics.stdev(v) if len(v) > 1 else 0.0


print(f"seeds {seeds}; config {os.path.relpath(a.config, root)}; " + "; ".join(f"{n}: {' '.join(s) or '(defaults)'}" for n, s in arms))
print()
print("| set | arm | rank-1 per seed | mean ± sd | mAP per seed | mean ± sd | img/s (median) | within the reference's range |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
verdict = True
for layout, synth_seed in datasets:
    ref = arms[0][0]
    r1ref = [results[(layout, synth_seed, ref, s)][0] for s in seeds]
    mapref = [results[(layout, synth_seed, ref, s)][1] for s in seeds]
    for name, _ in arms:
        r1 = [results[(layout, synth_seed, name, s)][0] for s in seeds]
        mp = [results[(layout, synth_seed, name, s)][1] for s in seeds]
        ips = statistics.median(results[(layout, synth_seed, name, s)][3] for s in seeds)
        ok = (min(r1ref) - sd(r1ref) <= statistics.mean(r1) <= max(r1ref) + sd(r1ref)
              and min(mapref) - sd(mapref) <= statistics.mean(mp) <= max(mapref) + sd(mapref))
        verdict &= ok
        print(f"| {layout} (synth seed {synth_seed}) | {name} | {', '.join('%.2f' % v for v in r1)} | {statistics.mean(r1):.2f} ± {sd(r1):.2f} "
              f"| {', '.join('%.2f' % v for v in mp)} | {statistics.mean(mp):.2f} ± {sd(mp):.2f} | {ips:.1f} | "
              f"{'reference' if name == ref else 'yes' if ok else 'NO'} |")
print()
for layout, synth_seed in datasets:
    print(f"Mean training loss per epoch, {layout} (synth seed {synth_seed}), mean over seeds:")
    print()
    epochs = len(results[(layout, synth_seed, arms[0][0], seeds[0])][2])
    print("| epoch | " + " | ".join(n for n, _ in arms) + " |")
    print("| --- | " + " | ".join("---" for _ in arms) + " |")
    for e in range(epochs):
        cells = [statistics.mean(results[(layout, synth_seed, n, s)][2][e] for s in seeds) for n, _ in arms]
        print(f"| {e + 1} | " + " | ".join("%.4f" % c for c in cells) + " |")
    print()
print("acceptance:", "PASS" if verdict else "FAIL")
