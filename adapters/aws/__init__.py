"""The AWS adapter: EC2 instances, the instance types in use, zones and regions, and EKS
clusters as O2ims inventory, and CloudWatch alarms and EC2 status-check impairments as
O2ims alarms, polled through boto3 (`python -m adapters.aws`)."""
