"""A local SMTP server (`aiosmtpd`) that keeps what it receives.

Env: SMTP_PORT (to listen on, 127.0.0.1), MAIL_DIR (each message is written
there as <n>.json: mail_from, rcpt_tos, data), SINK_SECONDS (how long to run
at most; default 300). Prints "ready" once it listens.
"""
import json
import os
import time

from aiosmtpd.controller import Controller

mail_dir = os.environ["MAIL_DIR"]
count = 0


class Keep:
    async def handle_DATA(self, server, session, envelope):
        global count
        count += 1
        message = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        path = os.path.join(mail_dir, f"{count}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(message, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"


controller = Controller(Keep(), hostname="127.0.0.1", port=int(os.environ["SMTP_PORT"]))
controller.start()
print("ready", flush=True)
try:
    time.sleep(float(os.environ.get("SINK_SECONDS", "300")))
finally:
    controller.stop()
