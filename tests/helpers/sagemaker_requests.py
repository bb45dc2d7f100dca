"""Test helper: the authorization requests SageMaker itself makes with a model's or job's
execution role (image pull, S3 reads and writes, logs, metrics), per documented flow.

What SageMaker asks IAM on the execution role's behalf, from the resources a script made.

Sources: "How to use SageMaker AI execution roles" (ECR pull, S3 model artifacts, CloudWatch
logs and metrics), the CreateTrainingJob, CreateTransformJob, AsyncInferenceConfig and
DataCaptureConfig API references, and "Amazon S3 actions" for which action each S3 call needs.
"""

from __future__ import annotations

import re

from helpers.iam_policy import Request

ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$"
)
S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")
ECR_PULL = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")


def s3_parts(uri: str) -> tuple[str, str]:
    found = S3_URI.match(uri)
    assert found, f"not an s3:// URI: {uri}"
    return found["bucket"], found["key"]


def image_pull(image: str) -> list[Request]:
    """docker pull of IMAGE from ECR: a token, then the manifest and layers of its repository."""
    found = ECR_IMAGE.match(image)
    assert found, f"not an ECR image URI: {image}"
    arn = f"arn:aws:ecr:{found['region']}:{found['account']}:repository/{found['repo']}"
    return [Request("ecr:GetAuthorizationToken", "*"), *(Request(a, arn) for a in ECR_PULL)]


def read_object(uri: str) -> list[Request]:
    bucket, key = s3_parts(uri)
    return [Request("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")]


def write_object(uri: str) -> list[Request]:
    """PutObject (single or multipart upload) and AbortMultipartUpload on a failed upload."""
    bucket, key = s3_parts(uri)
    arn = f"arn:aws:s3:::{bucket}/{key}"
    return [Request("s3:PutObject", arn), Request("s3:AbortMultipartUpload", arn)]


def read_prefix(uri: str, sample: str = "1/image_06734.jpg") -> list[Request]:
    """An S3Prefix data source: ListBucket with s3:prefix, then GetObject of each object."""
    bucket, key = s3_parts(uri)
    return [Request("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": key}),
            *read_object(f"s3://{bucket}/{key.rstrip('/')}/{sample}")]


def sync_prefix(uri: str) -> list[Request]:
    """Checkpoint sync (CheckpointConfig): list, download on start, upload while training."""
    bucket, key = s3_parts(uri)
    return [*read_prefix(uri, "checkpoint.pth"),
            *write_object(f"s3://{bucket}/{key.rstrip('/')}/checkpoint.pth")]


def logs(region: str, account: str, group: str, stream: str) -> list[Request]:
    arn = f"arn:aws:logs:{region}:{account}:log-group:{group}"
    return [Request("logs:CreateLogGroup", arn), Request("logs:CreateLogStream", f"{arn}:*"),
            Request("logs:DescribeLogStreams", f"{arn}:*"),
            Request("logs:PutLogEvents", f"{arn}:log-stream:{stream}")]


def metrics(namespace: str) -> list[Request]:
    return [Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": namespace})]


def hosting(model: dict, endpoint: str, region: str, account: str) -> list[Request]:
    """A real-time, serverless or async endpoint serving `model` (describe-model output)."""
    container = model["PrimaryContainer"]
    return [*image_pull(container["Image"]), *read_object(container["ModelDataUrl"]),
            *logs(region, account, f"/aws/sagemaker/Endpoints/{endpoint}",
                  "AllTraffic/i-0123456789abcdef0"),
            *metrics("/aws/sagemaker/Endpoints")]


def training(job: dict, region: str, account: str) -> list[Request]:
    """describe-training-job output -> pull, channels, model artifact, checkpoints, logs."""
    name = job["TrainingJobName"]
    found = [*image_pull(job["AlgorithmSpecification"]["TrainingImage"])]
    for channel in job["InputDataConfig"]:
        found += read_prefix(channel["DataSource"]["S3DataSource"]["S3Uri"])
    output = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    found += write_object(f"{output}/{name}/output/model.tar.gz")
    found += write_object(f"{output}/{name}/output/output.tar.gz")
    if job.get("CheckpointConfig"):
        found += sync_prefix(job["CheckpointConfig"]["S3Uri"])
    found += logs(region, account, "/aws/sagemaker/TrainingJobs", f"{name}/algo-1-1700000000")
    found += metrics("/aws/sagemaker/TrainingJobs")
    return found


def transform(job: dict, model: dict, region: str, account: str) -> list[Request]:
    """describe-transform-job output -> pull, model, input prefix, <file>.out outputs, logs."""
    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    output = job["TransformOutput"]["S3OutputPath"].rstrip("/")
    container = model["PrimaryContainer"]
    return [*image_pull(container["Image"]), *read_object(container["ModelDataUrl"]),
            *read_prefix(source), *write_object(f"{output}/1/image_06734.jpg.out"),
            *logs(region, account, "/aws/sagemaker/TransformJobs",
                  f"{job['TransformJobName']}/i-0123456789abcdef0"),
            *metrics("/aws/sagemaker/TransformJobs")]


def endpoint_config_writes(config: dict, endpoint: str) -> list[Request]:
    """describe-endpoint-config output -> the S3 writes SageMaker makes for async inference
    (answers and failures, reading the request the client uploaded) and data capture."""
    found = []
    if config.get("AsyncInferenceConfig"):
        out = config["AsyncInferenceConfig"]["OutputConfig"]
        found += write_object(f"{out['S3OutputPath'].rstrip('/')}/0a1b2c3d.out")
        found += write_object(f"{out['S3FailurePath'].rstrip('/')}/0a1b2c3d-error.out")
    if config.get("DataCaptureConfig"):
        destination = config["DataCaptureConfig"]["DestinationS3Uri"].rstrip("/")
        found += write_object(f"{destination}/{endpoint}/AllTraffic/2026/12/01/20/"
                              "20-15-00-000-0a1b2c3d.jsonl")
    return found
