from s3_multipart_upload.cli import main

main()
