from s3_multipart_upload.main import main

main()
