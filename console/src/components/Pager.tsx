// Previous / next over keyset pages: 100k orders page as fast as 100 (no OFFSET, no total count).
import { Button, Space, Typography } from 'antd';
import { LeftOutlined, RightOutlined } from '@ant-design/icons';
import { useI18n } from '../i18n';

export function Pager({ page, hasNext, onPrev, onNext }: { page: number; hasNext: boolean; onPrev: () => void; onNext: () => void }) {
  const { t } = useI18n();
  return (
    <Space style={{ marginTop: 12, display: 'flex', justifyContent: 'flex-end' }}>
      <Button size="small" icon={<LeftOutlined />} disabled={page <= 1} onClick={onPrev}>{t('pager.prev')}</Button>
      <Typography.Text type="secondary">{t('pager.page', { page })}</Typography.Text>
      <Button size="small" disabled={!hasNext} onClick={onNext} data-testid="pager-next">{t('pager.next')}<RightOutlined /></Button>
    </Space>
  );
}
