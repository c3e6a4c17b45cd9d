"""Sums a Kineto trace's GPU kernel time by kernel name: where one step's time goes.
usage: python3 kernel_table.py TRACE.json [top_n]"""
import collections
import json
import sys

trace = json.load(open(sys.argv[1]))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
total = collections.Counter()
count = collections.Counter()
for event in trace.get("traceEvents", []):
    if event.get("cat") == "kernel":
        total[event["name"]] += event.get("dur", 0)
        count[event["name"]] += 1
all_us = sum(total.values())
print(f"GPU kernel time {all_us / 1000:.1f} ms in {sum(count.values())} launches")
for name, us in total.most_common(top):
    print(f"{us / 1000:9.2f} ms {100 * us / all_us:5.1f}% {count[name]:6d}x  {name[:150]}")
