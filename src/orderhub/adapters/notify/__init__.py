"""Notification channels (SMS gateway, 企业微信 and 钉钉 robots, SMTP e-mail) and their Chinese templates."""
