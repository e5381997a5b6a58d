"""Reads TensorBoard event files with TensorBoard's own reader and prints their scalars as
JSON, {tag: [[step, value], ...]}: the independent check of `train --report-to tensorboard`
(tests/integration/programs.rs). TensorBoard's reader checks every record's CRC-32C.

Usage: python read_tensorboard.py DIR
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

accumulator = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
accumulator.Reload()
print(json.dumps({
    tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
    for tag in accumulator.Tags()["scalars"]
}))
