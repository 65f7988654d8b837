#!/usr/bin/env python3
# A Lambda function's bootstrap for the emulator tests: it keeps each event it is invoked
# with as a file in the directory named by MAILBOX and answers null. The test then runs
# the real handler on the event, on clients whose calls it counts.
import os
import urllib.request

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
box = os.environ["MAILBOX"]
while True:
    with urllib.request.urlopen(api + "next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        body = r.read()
    part = os.path.join(box, request_id + ".part")
    with open(part, "wb") as f:
        f.write(body)
    os.rename(part, os.path.join(box, request_id + ".json"))
    done = urllib.request.Request(api + request_id + "/response", data=b"null", method="POST")
    urllib.request.urlopen(done).read()
