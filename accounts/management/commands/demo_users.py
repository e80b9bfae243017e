from django.core.management.base import BaseCommand

from accounts.roles import ROLES
from accounts.services import create_user

# Demo credentials for `make run` on a laptop; printed, never used in production.
DEMO_PASSWORD = "opspanel-demo"  # noqa: S105


class Command(BaseCommand):
    help = "Create one demo user per role (support, operations, admin) and print the credentials."

    def handle(self, **options):
        for role in ROLES:
            create_user(role, DEMO_PASSWORD, role)
            self.stdout.write(f"  {role:<11} username {role:<11} password {DEMO_PASSWORD}")
