"""The upload controller service (``s3-multipart-upload serve``): presigned multipart uploads for clients
without AWS credentials, with each upload's status in a database. Needs the ``server`` extra."""
