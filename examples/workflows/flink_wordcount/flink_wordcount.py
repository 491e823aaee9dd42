"""The word count of AIFlow's Flink demo with FlinkPythonProcessors: read, count, write; then a summary in SQL.

Results go to this execution's own folder, so that runs (and users) never share one: a
Flink job runs in its own working folder, one per job and attempt inside the execution's
folder below the state dir, and writes to ``../output/<job>`` beside the execution's other jobs.
"""

import os

from aiflowd import FlinkPythonProcessor, FlinkSqlProcessor, job_config, user_define_operation

HERE = os.path.dirname(os.path.abspath(__file__))


def output(job):
    """The folder of ``job``'s result in this execution (read when the job runs, in its working folder)."""
    return os.path.join(os.path.dirname(os.getcwd()), "output", job)


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
            f"WITH ('connector' = 'filesystem', 'path' = '{output(self.name)}', 'format' = 'json')"
        )
        execution_context.statement_set.add_insert_sql("INSERT INTO counts SELECT word, COUNT(*) FROM words GROUP BY word")
        return []


class Summary(FlinkSqlProcessor):
    """A summary of count_cluster's result in SQL (a FlinkSqlProcessor: its statements are built when it runs)."""

    def sql_statements(self, execution_context):
        return [
            f"CREATE TABLE counts (word STRING, n BIGINT) WITH ("
            f"'connector' = 'filesystem', 'path' = '{output('count_cluster')}', 'format' = 'json')",
            f"CREATE TABLE summary (distinct_words BIGINT, occurrences BIGINT) WITH ("
            f"'connector' = 'filesystem', 'path' = '{output('count_sql')}', 'format' = 'csv')",
            "INSERT INTO summary SELECT COUNT(*), SUM(n) FROM counts",
        ]


for job in ("count_local", "count_cluster"):
    with job_config(job):
        words = user_define_operation(processor=ReadWords())
        user_define_operation(processor=CountWords(job), input=words)

with job_config("count_sql"):
    user_define_operation(processor=Summary())
