"""The word count of AIFlow's Flink demo with FlinkPythonProcessors: read, count, write."""

import os

from aiflowd import FlinkPythonProcessor, job_config, user_define_operation

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = "/tmp/aiflowd-examples"


class ReadWords(FlinkPythonProcessor):
    def process(self, execution_context, input_list):
        t_env = execution_context.table_env
        t_env.execute_sql(
            f"CREATE TABLE lines (line STRING) WITH ('connector' = 'filesystem', 'path' = '{HERE}/words.txt', 'format' = 'raw')"
        )
        return [t_env.sql_query("SELECT word FROM lines CROSS JOIN UNNEST(SPLIT(line, ' ')) AS t (word)")]


class CountWords(FlinkPythonProcessor):
    def __init__(self, name):
        self.name = name

    def process(self, execution_context, input_list):
        t_env = execution_context.table_env
        t_env.create_temporary_view("words", input_list[0])
        t_env.execute_sql(
            f"CREATE TABLE counts (word STRING, n BIGINT, PRIMARY KEY (word) NOT ENFORCED) "
            f"WITH ('connector' = 'filesystem', 'path' = '{OUT}/{self.name}', 'format' = 'json')"
        )
        execution_context.statement_set.add_insert_sql("INSERT INTO counts SELECT word, COUNT(*) FROM words GROUP BY word")
        return []


for job in ("count_local", "count_cluster"):
    with job_config(job):
        words = user_define_operation(processor=ReadWords())
        user_define_operation(processor=CountWords(job), input=words)
