"""The AWS Lambda entry point (``infra.aws_lambda.handler.http``)."""
