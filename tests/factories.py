"""factory_boy factories shared by every app's tests. They build through the services where an
invariant matters (users and their groups, API keys), and plainly where nothing does."""

from __future__ import annotations

import factory
from django.contrib.auth.models import Group

from accounts.models import ACCOUNT_MANAGER_GROUP, ADMIN_GROUP, Account, PricePlan, User


def default_plan_version():
    return PricePlan.objects.get(slug="fin-standard").current_version()


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    name = factory.Sequence(lambda n: f"Customer {n} Inc.")
    slug = factory.Sequence(lambda n: f"customer-{n}")
    billing_email = factory.LazyAttribute(lambda a: f"billing@{a.slug}.example")
    plan_version = factory.LazyFunction(default_plan_version)
    currency = "usd"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery staple")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class CustomerUserFactory(UserFactory):
    account = factory.SubFactory(AccountFactory)
    customer_role = User.CustomerRole.VIEWER


class BillingAdminFactory(CustomerUserFactory):
    customer_role = User.CustomerRole.BILLING_ADMIN


class StaffUserFactory(UserFactory):
    is_staff = True

    @factory.post_generation
    def group(obj, create, extracted, **kwargs):
        if create:
            obj.groups.add(Group.objects.get(name=extracted or ACCOUNT_MANAGER_GROUP))


class AdminUserFactory(StaffUserFactory):
    group = factory.PostGeneration(
        lambda obj, create, extracted, **kwargs: create and obj.groups.add(Group.objects.get(name=ADMIN_GROUP))
    )
