// The Java-client side of the Kafscale end-to-end tests, run with the JDK's
// source launcher against the kafka-clients jar of the version under test:
//
//   java -cp 'jars/*' RoundTrip.java BOOTSTRAP TOPIC CODEC COUNT
//
// Produces COUNT records with keys and headers (acks=all), remembers where each
// was acknowledged, reads all partitions back from the start and checks every
// record is at its offset with identical key, value and headers, and nothing else.
// KAFSCALE_CLIENT_CONFIG may name a properties file of further client settings
// (security.protocol, sasl.*, ssl.*), applied to the producer and the consumer.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class RoundTrip {
    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static ProducerRecord<byte[], byte[]> record(String topic, String codec, int i) {
        ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, b("key-" + i), b("value-" + i + "-" + "x".repeat(i % 200)));
        r.headers().add("idx", b(Integer.toString(i)));
        r.headers().add("codec", b(codec));
        return r;
    }

    static void fail(String msg) {
        System.err.println("FAIL: " + msg);
        System.exit(1);
    }

    static Properties extra() throws java.io.IOException {
        Properties extra = new Properties();
        String path = System.getenv("KAFSCALE_CLIENT_CONFIG");
        if (path != null && !path.isEmpty())
            try (java.io.FileReader r = new java.io.FileReader(path)) { extra.load(r); }
        return extra;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], codec = args[2];
        int count = Integer.parseInt(args[3]);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.putAll(extra());
        Map<String, Integer> acked = new ConcurrentHashMap<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                final int idx = i;
                futures.add(producer.send(record(topic, codec, i), (md, e) -> {
                    if (e != null) fail("produce " + idx + ": " + e);
                    else acked.put(md.partition() + "/" + md.offset(), idx);
                }));
            }
            for (Future<RecordMetadata> f : futures) f.get(2, TimeUnit.MINUTES);
        }
        if (acked.size() != count) fail(acked.size() + " distinct positions for " + count + " records");

        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.putAll(extra());
        int seen = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> parts = new ArrayList<>();
            for (PartitionInfo pi : consumer.partitionsFor(topic)) parts.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            long deadline = System.currentTimeMillis() + 120_000;
            while (seen < count) {
                if (System.currentTimeMillis() > deadline) fail("timed out after " + seen + " of " + count + " records");
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    Integer i = acked.remove(r.partition() + "/" + r.offset());
                    if (i == null) fail("unexpected record at " + r.partition() + "/" + r.offset());
                    ProducerRecord<byte[], byte[]> want = record(topic, codec, i);
                    if (!Arrays.equals(r.key(), want.key()) || !Arrays.equals(r.value(), want.value()))
                        fail("record " + i + ": key or value differs");
                    Header[] got = r.headers().toArray(), exp = want.headers().toArray();
                    if (got.length != exp.length) fail("record " + i + ": header count differs");
                    for (int h = 0; h < exp.length; h++)
                        if (!got[h].key().equals(exp[h].key()) || !Arrays.equals(got[h].value(), exp[h].value()))
                            fail("record " + i + ": header " + h + " differs");
                    seen++;
                }
            }
        }
        System.out.println("ok java codec=" + codec + " records=" + seen);
    }
}
