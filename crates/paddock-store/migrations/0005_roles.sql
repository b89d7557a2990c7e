-- Four roles per tenant (admin, operator, developer, viewer). Keys made before roles were
-- `admin` or `user`; a `user` key could use the sandboxes it created, which is `developer`.
UPDATE api_keys SET role = 'developer' WHERE role = 'user';
