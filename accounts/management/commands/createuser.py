import getpass
import os

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.roles import ROLES
from accounts.services import create_user


class Command(BaseCommand):
    help = (
        "Create a panel user with one role. The password is read from "
        "OPSPANEL_PASSWORD when set, otherwise prompted for."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)

    def handle(self, username, role, **options):
        password = os.environ.get("OPSPANEL_PASSWORD")
        if password is None:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("passwords do not match")
        try:
            validate_password(password)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        create_user(username, password, role)
        self.stdout.write(f"user {username} has role {role}")
