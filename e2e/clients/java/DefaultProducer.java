// A producer with Kafka's default configuration (idempotence on, acks=all),
// then a check that every record is stored exactly once and in send order
// within its partition:
//
//   java -cp 'jars/*' DefaultProducer.java BOOTSTRAP TOPIC COUNT

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class DefaultProducer {
    static void fail(String msg) {
        System.err.println("FAIL: " + msg);
        System.exit(1);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int count = Integer.parseInt(args[2]);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < count; i++) futures.add(producer.send(new ProducerRecord<>(topic, "k" + (i % 1000), Integer.toString(i))));
            for (Future<RecordMetadata> f : futures) f.get(2, TimeUnit.MINUTES);
        }

        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        boolean[] seen = new boolean[count];
        Map<Integer, Integer> lastPerPartition = new HashMap<>();
        int total = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> parts = new ArrayList<>();
            for (PartitionInfo pi : consumer.partitionsFor(topic)) parts.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> ends = consumer.endOffsets(parts);
            long expected = ends.values().stream().mapToLong(Long::longValue).sum();
            if (expected != count) fail("log holds " + expected + " records, " + count + " were sent");
            long deadline = System.currentTimeMillis() + 120_000;
            while (total < count) {
                if (System.currentTimeMillis() > deadline) fail("timed out after " + total + " records");
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    int i = Integer.parseInt(r.value());
                    if (seen[i]) fail("record " + i + " stored twice");
                    seen[i] = true;
                    Integer last = lastPerPartition.put(r.partition(), i);
                    if (last != null && last > i) fail("partition " + r.partition() + " has " + last + " before " + i);
                    total++;
                }
            }
        }
        System.out.println("ok default-producer records=" + total);
    }
}
