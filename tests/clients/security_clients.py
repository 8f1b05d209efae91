"""kafka-python and aiokafka over the broker's secured listeners (tests/tests/security_clients.rs).

  security_clients.py roundtrip --client kafka-python|aiokafka --bootstrap B --protocol P
        [--mechanism M --user U --password PW] [--ca CA] [--cert C --key K] --topic T --count N
      produces N records and consumes them back; prints `consumed N`
  security_clients.py refused (same options, no topic)
      expects the connection to fail; prints `refused: <ExceptionClass>: <message>`, or
      `UNEXPECTEDLY CONNECTED`
"""
import argparse
import asyncio
import ssl
import sys
import uuid


def kafka_python_security(args):
    conf = {"bootstrap_servers": args.bootstrap, "security_protocol": args.protocol}
    if args.protocol.startswith("SASL"):
        conf.update(sasl_mechanism=args.mechanism, sasl_plain_username=args.user, sasl_plain_password=args.password)
    if args.protocol.endswith("SSL"):
        conf.update(ssl_cafile=args.ca, ssl_check_hostname=True)
        if args.cert:
            conf.update(ssl_certfile=args.cert, ssl_keyfile=args.key)
    return conf


def kafka_python_roundtrip(args):
    from kafka import KafkaConsumer, KafkaProducer

    conf = kafka_python_security(args)
    producer = KafkaProducer(acks="all", **conf)
    futures = [producer.send(args.topic, f"value-{i}".encode()) for i in range(args.count)]
    producer.flush(30)
    for future in futures:
        future.get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        args.topic, group_id=f"g-{uuid.uuid4()}", auto_offset_reset="earliest", consumer_timeout_ms=30000, **conf
    )
    values = []
    for message in consumer:
        values.append(message.value.decode())
        if len(values) == args.count:
            break
    consumer.close()
    assert values == [f"value-{i}" for i in range(args.count)], values[:5]
    print("consumed", len(values))


def kafka_python_refused(args):
    import logging

    from kafka import KafkaConsumer

    # kafka-python reports why a connection failed only in its log, then times out bootstrapping.
    logging.basicConfig(level=logging.ERROR, stream=sys.stdout)

    try:
        consumer = KafkaConsumer(request_timeout_ms=10000, **kafka_python_security(args))
        consumer.topics()
        print("UNEXPECTEDLY CONNECTED")
    except Exception as e:  # the class is what the test checks
        print(f"refused: {type(e).__name__}: {e}")


def aiokafka_security(args):
    from aiokafka.helpers import create_ssl_context

    conf = {"bootstrap_servers": args.bootstrap, "security_protocol": args.protocol}
    if args.protocol.startswith("SASL"):
        conf.update(sasl_mechanism=args.mechanism, sasl_plain_username=args.user, sasl_plain_password=args.password)
    if args.protocol.endswith("SSL"):
        context = create_ssl_context(cafile=args.ca, certfile=args.cert, keyfile=args.key)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        conf["ssl_context"] = context
    return conf


async def aiokafka_roundtrip(args):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    conf = aiokafka_security(args)
    producer = AIOKafkaProducer(acks="all", **conf)
    await producer.start()
    try:
        for i in range(args.count):
            await producer.send(args.topic, f"value-{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(args.topic, group_id=f"g-{uuid.uuid4()}", auto_offset_reset="earliest", **conf)
    await consumer.start()
    values = []
    try:
        async with asyncio.timeout(30):
            async for message in consumer:
                values.append(message.value.decode())
                if len(values) == args.count:
                    break
    finally:
        await consumer.stop()
    assert values == [f"value-{i}" for i in range(args.count)], values[:5]
    print("consumed", len(values))


async def aiokafka_refused(args):
    import logging

    from aiokafka import AIOKafkaProducer

    # aiokafka reports why a connection failed only in its log, then fails to bootstrap.
    logging.basicConfig(level=logging.ERROR, stream=sys.stdout)

    producer = AIOKafkaProducer(request_timeout_ms=10000, **aiokafka_security(args))
    try:
        async with asyncio.timeout(20):
            await producer.start()
        print("UNEXPECTEDLY CONNECTED")
    except Exception as e:
        print(f"refused: {type(e).__name__}: {e}")
    finally:
        await producer.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["roundtrip", "refused"])
    parser.add_argument("--client", choices=["kafka-python", "aiokafka"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--protocol", required=True)
    for option in ["mechanism", "user", "password", "ca", "cert", "key", "topic"]:
        parser.add_argument(f"--{option}")
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    if args.client == "kafka-python":
        {"roundtrip": kafka_python_roundtrip, "refused": kafka_python_refused}[args.command](args)
    else:
        asyncio.run({"roundtrip": aiokafka_roundtrip, "refused": aiokafka_refused}[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
