package org.example;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

public class WordCount {
    public static void main(String[] args) throws Exception {
        final String out = args[0];
        final long count = Long.parseLong(args[1]);
        final long pauseMs = args.length > 2 ? Long.parseLong(args[2]) : 0;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.fromSequence(1, count)
            .map(new MapFunction<Long, Long>() {
                public Long map(Long value) throws Exception {
                    if (value < 0) throw new IllegalStateException("negative");
                    if (pauseMs > 0) Thread.sleep(pauseMs);
                    Files.writeString(Path.of(out), value + "\n", StandardOpenOption.CREATE, StandardOpenOption.APPEND);
                    return value;
                }
            })
            .sinkTo(new DiscardingSink<>());
        env.execute("aiflowd-test-" + Path.of(out).getFileName());
    }
}
