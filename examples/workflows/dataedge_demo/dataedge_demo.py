"""A python job whose nodes pass data over DataEdges, then a bash job chained after it."""

import os

from aiflowd import PythonProcessor, job_config, user_define_operation


class Split(PythonProcessor):
    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def process(self, execution_context, input_list):
        samples = list(range(int(os.environ["SAMPLES"])))
        cut = int(len(samples) * self.ratio)
        return [samples[:cut], samples[cut:]]


class Report(PythonProcessor):
    def process(self, execution_context, input_list):
        train, test = input_list
        print(f"train={len(train)} test={len(test)} mean_train={sum(train) / len(train):.1f}")
        return []


with job_config("train"):
    train_set, test_set = user_define_operation(processor=Split(ratio=0.8), output_num=2, name="split")
    user_define_operation(processor=Report(), input=[train_set, test_set], name="report")
