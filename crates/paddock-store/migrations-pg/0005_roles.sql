-- Four roles per tenant (../migrations/0005_roles.sql): `user` keys are `developer`.
UPDATE api_keys SET role = 'developer' WHERE role = 'user';
