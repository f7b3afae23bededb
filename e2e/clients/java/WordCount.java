// Kafka Streams' word count with Streams' default settings, for the
// end-to-end tests:
//
//   java -cp 'jars/*' WordCount.java BOOTSTRAP INPUT OUTPUT STATE_DIR APP_ID
//
// Counts the words of INPUT's values in a state store (its changelog is a
// compacted topic Streams creates) and writes each new count to OUTPUT. It
// prints "RUNNING" once the application runs (its store restored) and runs
// until stdin closes, then closes and prints "CLOSED".

import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

public class WordCount {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[3]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[4]);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);

        StreamsBuilder builder = new StreamsBuilder();
        builder.<String, String>stream(args[1])
            .flatMapValues(line -> Arrays.asList(line.toLowerCase().split("\\W+")))
            .filter((key, word) -> !word.isEmpty())
            .groupBy((key, word) -> word)
            .count(Materialized.as("counts"))
            .toStream()
            .to(args[2], Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch failed = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println(now);
            System.out.flush();
            if (now == KafkaStreams.State.ERROR) {
                failed.countDown();
            }
        });
        streams.start();
        Thread stdin = new Thread(() -> {
            try {
                while (System.in.read() != -1) {
                    // until the test closes stdin
                }
            } catch (Exception e) {
                // closed
            }
            failed.countDown();
        });
        stdin.setDaemon(true);
        stdin.start();
        failed.await();
        streams.close(Duration.ofSeconds(30));
        System.out.println("CLOSED");
    }
}
