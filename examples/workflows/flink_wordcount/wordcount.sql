-- A summary of count_cluster's result in SQL (the YAML form of a FlinkSqlProcessor: sql_file).
CREATE TABLE counts (word STRING, n BIGINT) WITH (
  'connector' = 'filesystem', 'path' = '/tmp/aiflowd-examples/count_cluster', 'format' = 'json');
CREATE TABLE summary (distinct_words BIGINT, occurrences BIGINT) WITH (
  'connector' = 'filesystem', 'path' = '/tmp/aiflowd-examples/count_sql', 'format' = 'csv');
INSERT INTO summary SELECT COUNT(*), SUM(n) FROM counts;
