// A producer with Kafka's default configuration (idempotence on, acks=all)
// that records the history of its sends for the history checker:
//
//   java -cp 'jars/*' AckLogProducer.java BOOTSTRAP TOPIC PREFIX RATE [VALUE_BYTES]
//
// It sends values PREFIX-0, PREFIX-1, ... at about RATE records per second
// (with VALUE_BYTES, each padded to that size after a '.'; the lines name the
// unpadded value)
// until it reads "stop" (or EOF) on stdin, then waits for every send to be
// answered. One line per answer, then a summary:
//   ACK value partition offset ack-millis send-millis | ERR value exception
//   DONE sent acked failed

import java.time.Duration;
import java.util.Properties;
import java.util.Scanner;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.serialization.StringSerializer;

public class AckLogProducer {
    static synchronized void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], prefix = args[2];
        double rate = Double.parseDouble(args[3]);
        int valueBytes = args.length > 4 ? Integer.parseInt(args[4]) : 0;
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        if (valueBytes > 0) {
            // Large records at high rates: batches big enough that five in
            // flight per partition carry the rate across an upload's latency.
            p.put(ProducerConfig.BATCH_SIZE_CONFIG, "262144");
            p.put(ProducerConfig.LINGER_MS_CONFIG, "20");
        }

        AtomicBoolean stop = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            Scanner in = new Scanner(System.in);
            while (in.hasNextLine()) if (in.nextLine().trim().equals("stop")) break;
            stop.set(true);
        });
        stdin.setDaemon(true);
        stdin.start();

        AtomicLong acked = new AtomicLong(), failed = new AtomicLong();
        long sent = 0;
        long start = System.nanoTime();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            while (!stop.get()) {
                long due = start + (long) (sent * 1e9 / rate);
                long wait = due - System.nanoTime();
                // Sleeping only when a millisecond ahead keeps high rates reachable.
                if (wait >= 1_000_000) Thread.sleep(wait / 1_000_000);
                String value = prefix + "-" + sent;
                String padded = valueBytes > value.length() + 1
                        ? value + "." + "x".repeat(valueBytes - value.length() - 1)
                        : value;
                long sentAt = System.currentTimeMillis();
                producer.send(new ProducerRecord<>(topic, "k" + (sent % 100), padded), (md, e) -> {
                    if (e == null) {
                        acked.incrementAndGet();
                        emit("ACK " + value + " " + md.partition() + " " + md.offset() + " " + System.currentTimeMillis() + " " + sentAt);
                    } else {
                        failed.incrementAndGet();
                        emit("ERR " + value + " " + e.toString().replace(' ', '_'));
                    }
                });
                sent++;
            }
            producer.flush();
        }
        emit("DONE " + sent + " " + acked.get() + " " + failed.get());
    }
}
