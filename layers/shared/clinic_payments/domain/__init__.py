"""Pure business rules. Imports neither boto3, botocore, stripe nor aws_lambda_powertools."""
