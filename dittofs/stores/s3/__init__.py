"""Content in an S3 bucket, with a local cache tier, its uploader and its garbage collector."""
