"""An agent: answers the questions it finds in a bucket with the factory's chat model.

Every few seconds it looks for ``questions/*`` in its bucket; each question
without an answer yet is sent to the chat model and the reply is written to
``answers/<same name>``. It uses only what the factory injects into an
Agent's replicas: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` for the model,
``AWS_ENDPOINT_URL`` and an access key pair for the bucket, all of them its
tenant's, under its tenant's limits.
"""

from __future__ import annotations

import os
import time

import boto3
from botocore.config import Config
from openai import OpenAI

BUCKET = os.environ.get("AGENT_BUCKET", "agent-inbox")
MODEL = os.environ.get("AGENT_MODEL", "chat")
POLL_S = float(os.environ.get("AGENT_POLL_S", "2"))


def main() -> None:
    """Answer questions until stopped."""
    llm = OpenAI()
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    print(f"agent: answering questions/ in bucket {BUCKET} with {MODEL}", flush=True)
    while True:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="questions/")
        answered = {
            o["Key"].removeprefix("answers/")
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="answers/").get("Contents", [])
        }
        for question in listed.get("Contents", []):
            name = question["Key"].removeprefix("questions/")
            if name in answered:
                continue
            text = s3.get_object(Bucket=BUCKET, Key=question["Key"])["Body"].read().decode()
            reply = llm.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=48
            )
            answer = reply.choices[0].message.content or ""
            s3.put_object(Bucket=BUCKET, Key=f"answers/{name}", Body=answer.encode())
            print(f"agent: answered {name}", flush=True)
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
