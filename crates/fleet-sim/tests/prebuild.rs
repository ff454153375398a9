#[test] fn compiles() { let _ = aws_sdk_ssm::Client::from_conf; let _ = aws_sdk_ec2::Client::from_conf; }
